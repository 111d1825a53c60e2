#include "ublk_control.h"

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

namespace ubloop {
namespace {

constexpr const char *kControlPath = "/dev/ublk-control";

struct ControlFd {
  int fd = -1;
  int openErrno = 0;
};

const ControlFd &controlFd() {
  static ControlFd cf = [] {
    ControlFd c;
    c.fd = open(kControlPath, O_RDWR | O_CLOEXEC);
    if (c.fd < 0) c.openErrno = errno;
    return c;
  }();
  return cf;
}

const char *opName(unsigned nr) {
  switch (nr) {
    case UBLK_CMD_GET_DEV_INFO: return "GET_DEV_INFO";
    case UBLK_CMD_GET_DEV_INFO2: return "GET_DEV_INFO2";
    case UBLK_CMD_ADD_DEV: return "ADD_DEV";
    case UBLK_CMD_DEL_DEV: return "DEL_DEV";
    case UBLK_CMD_START_DEV: return "START_DEV";
    case UBLK_CMD_STOP_DEV: return "STOP_DEV";
    case UBLK_CMD_SET_PARAMS: return "SET_PARAMS";
    case UBLK_CMD_GET_FEATURES: return "GET_FEATURES";
    case UBLK_CMD_UPDATE_SIZE: return "UPDATE_SIZE";
    case UBLK_CMD_TRY_STOP_DEV: return "TRY_STOP_DEV";
    case UBLK_CMD_START_USER_RECOVERY: return "START_USER_RECOVERY";
    case UBLK_CMD_END_USER_RECOVERY: return "END_USER_RECOVERY";
    case UBLK_CMD_QUIESCE_DEV: return "QUIESCE_DEV";
    default: return "UBLK_CMD";
  }
}

bool isReadCommand(unsigned nr) {
  return nr == UBLK_CMD_GET_DEV_INFO || nr == UBLK_CMD_GET_FEATURES ||
         nr == UBLK_CMD_GET_DEV_INFO2;
}

// Sends one command and waits for its completion. Returns the CQE result (>= 0) or
// a negative errno.
int execute(abi::Encoding enc, unsigned nr, const abi::CtrlCmd &cmd) {
  const ControlFd &cf = controlFd();
  if (cf.fd < 0) return -cf.openErrno;

  io_uring ring;
  int ret = io_uring_queue_init(4, &ring, IORING_SETUP_SQE128);
  if (ret < 0) return ret;

  // A fresh ring always has a free SQE; an SQE128 slot is two normal SQEs long.
  io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  if (sqe == nullptr) {
    io_uring_queue_exit(&ring);
    return -EBUSY;
  }
  memset(static_cast<void *>(sqe), 0, 2 * sizeof(io_uring_sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = cf.fd;
  sqe->cmd_op = abi::ctrlOp(enc, nr, isReadCommand(nr));
  memcpy(sqe->cmd, &cmd, sizeof(cmd));

  ret = io_uring_submit(&ring);
  if (ret >= 0) {
    io_uring_cqe *cqe = nullptr;
    do {
      ret = io_uring_wait_cqe(&ring, &cqe);
    } while (ret == -EINTR);
    if (ret == 0) {
      ret = cqe->res;
      io_uring_cqe_seen(&ring, cqe);
    }
  }
  io_uring_queue_exit(&ring);
  return ret;
}

KernelSupport probe() {
  KernelSupport ks;
  const ControlFd &cf = controlFd();
  if (cf.fd < 0) {
    ks.openErrno = cf.openErrno;
    return ks;
  }
  ks.present = true;
  // GET_FEATURES exists only ioctl-encoded (Linux 6.5+); Linux 6.1 answers it with
  // an error, which tells us to stay with legacy opcodes.
  uint64_t features = 0;
  abi::CtrlCmd cmd{};
  cmd.dev_id = static_cast<uint32_t>(-1);
  cmd.queue_id = static_cast<uint16_t>(-1);
  cmd.addr = reinterpret_cast<uint64_t>(&features);
  cmd.len = sizeof(features);
  if (execute(abi::Encoding::Ioctl, UBLK_CMD_GET_FEATURES, cmd) >= 0) {
    ks.encoding = abi::Encoding::Ioctl;
    ks.features = features;
  }
  return ks;
}

// Whether the command carries the path of the device's char node in front of its
// buffer. The kernel checks the caller's permission on that node for a device added
// with UBLK_F_UNPRIVILEGED_DEV (and for GET_DEV_INFO2 on every device), then skips
// the path. Commands without a buffer carry it wherever the kernel knows the field
// (GET_FEATURES works): a privileged device ignores their buffer, so a command by id
// works whatever the device, e.g. `ubloop cleanup` run by a device's owner.
bool carriesPath(unsigned nr, Access access) {
  if (nr == UBLK_CMD_ADD_DEV) return false;
  if (nr == UBLK_CMD_GET_DEV_INFO2 || access == Access::Unprivileged) return true;
  const bool noBuffer = nr == UBLK_CMD_START_DEV || nr == UBLK_CMD_STOP_DEV || nr == UBLK_CMD_DEL_DEV ||
                        nr == UBLK_CMD_TRY_STOP_DEV || nr == UBLK_CMD_UPDATE_SIZE ||
                        nr == UBLK_CMD_START_USER_RECOVERY || nr == UBLK_CMD_END_USER_RECOVERY ||
                        nr == UBLK_CMD_QUIESCE_DEV;
  return noBuffer && kernelSupport().features.has_value();
}

// One command for device `id`, with `len` bytes at `buf` (in and out) and data[0].
Result<Unit> run(uint32_t id, unsigned nr, Access access, void *buf = nullptr, size_t len = 0, uint64_t data0 = 0) {
  abi::CtrlCmd cmd{};
  cmd.dev_id = id;
  cmd.queue_id = static_cast<uint16_t>(-1);
  cmd.data0 = data0;
  std::string framed;
  if (carriesPath(nr, access)) {
    const std::string path = charDevicePath(id);
    framed.assign(path.c_str(), path.size() + 1);
    framed.append(static_cast<const char *>(buf), len);
    cmd.dev_path_len = static_cast<uint16_t>(path.size() + 1);
    cmd.addr = reinterpret_cast<uint64_t>(framed.data());
    cmd.len = static_cast<uint16_t>(framed.size());
  } else {
    cmd.addr = reinterpret_cast<uint64_t>(buf);
    cmd.len = static_cast<uint16_t>(len);
  }
  int ret = execute(kernelSupport().encoding, nr, cmd);
  if (ret < 0) {
    return Result<Unit>::fail(SysError::from(ret, std::string(opName(nr)), "device " + std::to_string(id)));
  }
  if (!framed.empty() && len > 0) memcpy(buf, framed.data() + cmd.dev_path_len, len);
  return Result<Unit>{Unit{}, {}};
}

template <typename T>
Result<T> runWithBuffer(uint32_t id, unsigned nr, Access access, T value) {
  Result<Unit> r = run(id, nr, access, &value, sizeof(value));
  if (!r.ok()) return Result<T>::fail(r.error);
  return Result<T>{value, {}};
}

}  // namespace

const KernelSupport &kernelSupport() {
  static const KernelSupport ks = probe();
  return ks;
}

Result<ublksrv_ctrl_dev_info> UblkControl::addDevice(const ublksrv_ctrl_dev_info &request) {
  return runWithBuffer(request.dev_id, UBLK_CMD_ADD_DEV, Access::Privileged, request);
}

Result<Unit> UblkControl::setParams(uint32_t id, Access access, const ublk_params &params) {
  Result<ublk_params> r = runWithBuffer(id, UBLK_CMD_SET_PARAMS, access, params);
  if (!r.ok()) return Result<Unit>::fail(r.error);
  return Result<Unit>{Unit{}, {}};
}

Result<ublksrv_ctrl_dev_info> UblkControl::getInfo(uint32_t id) {
  // GET_DEV_INFO2 (Linux 6.3+) answers for unprivileged devices too, to whoever may
  // open their node; it needs the node here, so without one (a container without
  // /dev/ublkcN) GET_DEV_INFO, which only root's devices answer, is the fallback.
  if (kernelSupport().features) {
    Result<ublksrv_ctrl_dev_info> r = runWithBuffer(id, UBLK_CMD_GET_DEV_INFO2, Access::Privileged, ublksrv_ctrl_dev_info{});
    if (r.ok() || r.error.err != ENOENT) return r;
  }
  return runWithBuffer(id, UBLK_CMD_GET_DEV_INFO, Access::Privileged, ublksrv_ctrl_dev_info{});
}

Result<Unit> UblkControl::start(uint32_t id, int serverPid) {
  return run(id, UBLK_CMD_START_DEV, Access::Privileged, nullptr, 0, static_cast<uint64_t>(serverPid));
}

Result<Unit> UblkControl::stop(uint32_t id) { return run(id, UBLK_CMD_STOP_DEV, Access::Privileged); }

Result<Unit> UblkControl::tryStop(uint32_t id) { return run(id, UBLK_CMD_TRY_STOP_DEV, Access::Privileged); }

Result<Unit> UblkControl::updateSize(uint32_t id, uint64_t bytes) {
  return run(id, UBLK_CMD_UPDATE_SIZE, Access::Privileged, nullptr, 0, bytes >> 9);
}

Result<Unit> UblkControl::startRecovery(uint32_t id) { return run(id, UBLK_CMD_START_USER_RECOVERY, Access::Privileged); }

Result<Unit> UblkControl::endRecovery(uint32_t id, int serverPid) {
  return run(id, UBLK_CMD_END_USER_RECOVERY, Access::Privileged, nullptr, 0, static_cast<uint64_t>(serverPid));
}

Result<Unit> UblkControl::quiesce(uint32_t id, uint64_t timeoutMs) {
  // QUIESCE_DEV exists only ioctl-encoded; Linux 6.1 has neither it nor the flag.
  if (kernelSupport().encoding != abi::Encoding::Ioctl) {
    return Result<Unit>::fail(SysError::from(EOPNOTSUPP, "QUIESCE_DEV", "device " + std::to_string(id) + ": this kernel has no QUIESCE_DEV"));
  }
  return run(id, UBLK_CMD_QUIESCE_DEV, Access::Privileged, nullptr, 0, timeoutMs);
}

Result<Unit> UblkControl::remove(uint32_t id) { return run(id, UBLK_CMD_DEL_DEV, Access::Privileged); }

std::string charDevicePath(uint32_t id) { return "/dev/ublkc" + std::to_string(id); }

}  // namespace ubloop
