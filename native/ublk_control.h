// Control commands on /dev/ublk-control. Each command is one IORING_OP_URING_CMD on a
// small SQE128 ring, submitted and waited for synchronously: call these off the JS
// thread, since START_DEV and DEL_DEV may block for a long time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "errors.h"
#include "ublk_abi.h"

namespace ubloop {

// What the running kernel's ublk offers, probed once per process.
struct KernelSupport {
  bool present = false;              // /dev/ublk-control exists and opens
  int openErrno = 0;                 // why it could not be opened
  abi::Encoding encoding = abi::Encoding::Legacy;
  std::optional<uint64_t> features;  // GET_FEATURES answer (Linux 6.5+)
};

const KernelSupport &kernelSupport();

// Result type for control commands: an errno-carrying error, or success.
template <typename T>
struct Result {
  std::optional<T> value;
  SysError error;
  bool ok() const { return value.has_value(); }
  static Result fail(SysError e) { return Result{std::nullopt, std::move(e)}; }
};

struct Unit {};

// How the kernel checks a command for a device: by the caller's CAP_SYS_ADMIN
// (Privileged), or, for a device added with UBLK_F_UNPRIVILEGED_DEV, by the caller's
// permission on the device's char node, whose path then leads the command's buffer.
// Commands without a buffer carry the path anyway where the kernel knows it, so
// only SET_PARAMS needs telling.
enum class Access { Privileged, Unprivileged };

// /dev/ublkcN.
std::string charDevicePath(uint32_t id);

class UblkControl {
 public:
  // dev_id may be -1 (automatic); the kernel fills in the id and the granted flags.
  static Result<ublksrv_ctrl_dev_info> addDevice(const ublksrv_ctrl_dev_info &request);
  static Result<Unit> setParams(uint32_t id, Access access, const ublk_params &params);
  // GET_DEV_INFO2 where the kernel has it (owner uid/gid, unprivileged devices).
  static Result<ublksrv_ctrl_dev_info> getInfo(uint32_t id);
  static Result<Unit> start(uint32_t id, int serverPid);
  static Result<Unit> stop(uint32_t id);
  // STOP_DEV unless the disk is open (EBUSY); devices with UBLK_F_SAFE_STOP_DEV.
  static Result<Unit> tryStop(uint32_t id);
  // New device size in bytes (a multiple of 512); devices with UBLK_F_UPDATE_SIZE.
  static Result<Unit> updateSize(uint32_t id, uint64_t bytes);
  static Result<Unit> remove(uint32_t id);
  // Recovery of a device whose server died (UBLK_F_USER_RECOVERY): START_USER_RECOVERY
  // once the device is QUIESCED (or FAIL_IO) and the old server has released
  // /dev/ublkcN (EBUSY before), then the new server's queues FETCH every tag, then
  // END_USER_RECOVERY, which waits for those FETCHes and makes the device LIVE again.
  static Result<Unit> startRecovery(uint32_t id);
  static Result<Unit> endRecovery(uint32_t id, int serverPid);
  // QUIESCE_DEV (UBLK_F_QUIESCE): the server gets every command back once no request
  // is in flight; the device then waits in QUIESCED for a new server.
  static Result<Unit> quiesce(uint32_t id, uint64_t timeoutMs);
};

}  // namespace ubloop
