// ublk user ABI: what <linux/ublk_cmd.h> of Linux 6.1 defines, plus the pieces newer
// kernels added (ioctl-encoded opcodes, GET_FEATURES, newer UBLK_F_* flags), declared
// here under #ifndef so that one build runs on 6.1 and uses newer features when the
// running kernel grants them.
#pragma once

#include <linux/ublk_cmd.h>
#include <stdint.h>
#include <sys/ioctl.h>

#ifndef UBLK_CMD_GET_DEV_INFO2
#define UBLK_CMD_GET_DEV_INFO2 0x12
#endif
#ifndef UBLK_CMD_GET_FEATURES
#define UBLK_CMD_GET_FEATURES 0x13
#endif
// Linux 6.16+: new size (in 512-byte sectors) in data[0]; needs UBLK_F_UPDATE_SIZE.
#ifndef UBLK_CMD_UPDATE_SIZE
#define UBLK_CMD_UPDATE_SIZE 0x15
#endif
// Linux 6.19+: STOP_DEV only if nobody has the disk open (else EBUSY); needs
// UBLK_F_SAFE_STOP_DEV.
#ifndef UBLK_CMD_TRY_STOP_DEV
#define UBLK_CMD_TRY_STOP_DEV 0x17
#endif

// Linux 6.15+: make a live device's server give back every command once no request
// is in flight (the device waits in QUIESCED for a new server); needs UBLK_F_QUIESCE.
// data[0] is a timeout in ms (0: none). Ioctl-encoded only.
#ifndef UBLK_CMD_QUIESCE_DEV
#define UBLK_CMD_QUIESCE_DEV 0x16
#endif
#ifndef UBLK_S_DEV_FAIL_IO
#define UBLK_S_DEV_FAIL_IO 3
#endif

#ifndef UBLK_F_UNPRIVILEGED_DEV
#define UBLK_F_UNPRIVILEGED_DEV (1ULL << 5)
#endif
#ifndef UBLK_F_CMD_IOCTL_ENCODE
#define UBLK_F_CMD_IOCTL_ENCODE (1ULL << 6)
#endif
#ifndef UBLK_F_USER_COPY
#define UBLK_F_USER_COPY (1ULL << 7)
#endif
#ifndef UBLK_F_ZONED
#define UBLK_F_ZONED (1ULL << 8)
#endif
#ifndef UBLK_F_USER_RECOVERY_FAIL_IO
#define UBLK_F_USER_RECOVERY_FAIL_IO (1ULL << 9)
#endif
#ifndef UBLK_F_UPDATE_SIZE
#define UBLK_F_UPDATE_SIZE (1ULL << 10)
#endif
#ifndef UBLK_F_AUTO_BUF_REG
#define UBLK_F_AUTO_BUF_REG (1ULL << 11)
#endif
#ifndef UBLK_F_QUIESCE
#define UBLK_F_QUIESCE (1ULL << 12)
#endif
#ifndef UBLK_F_PER_IO_DAEMON
#define UBLK_F_PER_IO_DAEMON (1ULL << 13)
#endif
#ifndef UBLK_F_BUF_REG_OFF_DAEMON
#define UBLK_F_BUF_REG_OFF_DAEMON (1ULL << 14)
#endif
#ifndef UBLK_F_SAFE_STOP_DEV
#define UBLK_F_SAFE_STOP_DEV (1ULL << 17)
#endif

// Linux 6.15+: the request's pages go into (out of) the ring's buffer table at the
// index in addr; needs UBLK_F_SUPPORT_ZERO_COPY. Ioctl-encoded only.
#ifndef UBLK_U_IO_REGISTER_IO_BUF
#define UBLK_U_IO_REGISTER_IO_BUF _IOWR('u', 0x23, struct ublksrv_io_cmd)
#define UBLK_U_IO_UNREGISTER_IO_BUF _IOWR('u', 0x24, struct ublksrv_io_cmd)
#endif
// UBLK_F_AUTO_BUF_REG: set in a request's op_flags when its automatic registration
// failed and the server asked for UBLK_AUTO_BUF_REG_FALLBACK (register it yourself).
#ifndef UBLK_IO_F_NEED_REG_BUF
#define UBLK_IO_F_NEED_REG_BUF (1U << 17)
#define UBLK_AUTO_BUF_REG_FALLBACK (1 << 0)
#endif

namespace ubloop::abi {

// struct ublksrv_ctrl_cmd as Linux 6.3+ lays it out: the second word of 6.1's data[2]
// became dev_path_len (UBLK_F_UNPRIVILEGED_DEV and GET_DEV_INFO2), which 6.1's header
// does not name. Same 32 bytes, so one definition serves every kernel.
struct CtrlCmd {
  __u32 dev_id;
  __u16 queue_id;
  __u16 len;  // bytes at addr
  __u64 addr;
  __u64 data0;
  __u16 dev_path_len;  // with the NUL; the path leads the buffer at addr
  __u16 pad;
  __u32 reserved;
};

// The kernel accepts a control or I/O command either by its bare number ("legacy",
// the only form Linux 6.1 knows) or ioctl-encoded (Linux 6.4+).
enum class Encoding { Legacy, Ioctl };

constexpr unsigned ctrlOp(Encoding e, unsigned nr, bool readOnly) {
  if (e == Encoding::Legacy) return nr;
  return readOnly ? _IOR('u', nr, struct ublksrv_ctrl_cmd) : _IOWR('u', nr, struct ublksrv_ctrl_cmd);
}

constexpr unsigned ioOp(Encoding e, unsigned nr) {
  return e == Encoding::Legacy ? nr : _IOWR('u', nr, struct ublksrv_io_cmd);
}

// The per-queue descriptor array lives in the char device's mmap space.
constexpr unsigned long descOffset(unsigned qid) {
  return UBLKSRV_CMD_BUF_OFFSET + qid * UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc);
}

// UBLK_F_USER_COPY: the file offset on /dev/ublkcN of byte `byte` of the request at
// (qid, tag): 25 bits of byte, 16 of tag, then the queue, above UBLKSRV_IO_BUF_OFFSET.
constexpr uint64_t userCopyOffset(unsigned qid, unsigned tag, uint64_t byte) {
  return UBLKSRV_IO_BUF_OFFSET + (uint64_t(qid) << 41) + (uint64_t(tag) << 25) + byte;
}

// UBLK_F_AUTO_BUF_REG: what FETCH/COMMIT carry in sqe->addr (struct ublk_auto_buf_reg:
// bits 0-15 the buffer table index, 16-23 flags, the rest zero).
constexpr uint64_t autoBufReg(uint16_t index, uint8_t flags) { return uint64_t(index) | uint64_t(flags) << 16; }

// Linux 6.3+ stores the creator's uid and gid where 6.1's header has reserved0 (zero,
// i.e. root, on 6.1, where only root can add devices).
inline __u32 ownerUid(const ublksrv_ctrl_dev_info &i) { return static_cast<__u32>(i.reserved0); }
inline __u32 ownerGid(const ublksrv_ctrl_dev_info &i) { return static_cast<__u32>(i.reserved0 >> 32); }

static_assert(sizeof(struct ublksrv_ctrl_cmd) == 32 && sizeof(CtrlCmd) == 32, "control command fills the SQE128 cmd area");
static_assert(sizeof(struct ublksrv_io_cmd) == 16, "I/O command fits a normal SQE");
static_assert(sizeof(struct ublksrv_ctrl_dev_info) == 64, "dev_info layout");

}  // namespace ubloop::abi
