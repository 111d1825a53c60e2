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
    case UBLK_CMD_ADD_DEV: return "ADD_DEV";
    case UBLK_CMD_DEL_DEV: return "DEL_DEV";
    case UBLK_CMD_START_DEV: return "START_DEV";
    case UBLK_CMD_STOP_DEV: return "STOP_DEV";
    case UBLK_CMD_SET_PARAMS: return "SET_PARAMS";
    case UBLK_CMD_GET_PARAMS: return "GET_PARAMS";
    case UBLK_CMD_START_USER_RECOVERY: return "START_USER_RECOVERY";
    case UBLK_CMD_END_USER_RECOVERY: return "END_USER_RECOVERY";
    case UBLK_CMD_GET_FEATURES: return "GET_FEATURES";
    case UBLK_CMD_UPDATE_SIZE: return "UPDATE_SIZE";
    case UBLK_CMD_TRY_STOP_DEV: return "TRY_STOP_DEV";
    default: return "UBLK_CMD";
  }
}

bool isReadCommand(unsigned nr) {
  return nr == UBLK_CMD_GET_DEV_INFO || nr == UBLK_CMD_GET_PARAMS || nr == UBLK_CMD_GET_FEATURES ||
         nr == UBLK_CMD_GET_DEV_INFO2;
}

// Sends one command and waits for its completion. Returns the CQE result (>= 0) or
// a negative errno.
int execute(abi::Encoding enc, unsigned nr, const ublksrv_ctrl_cmd &cmd) {
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
  ublksrv_ctrl_cmd cmd{};
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

ublksrv_ctrl_cmd makeCmd(uint32_t id) {
  ublksrv_ctrl_cmd cmd{};
  cmd.dev_id = id;
  cmd.queue_id = static_cast<uint16_t>(-1);
  return cmd;
}

Result<Unit> run(uint32_t id, unsigned nr, ublksrv_ctrl_cmd cmd) {
  int ret = execute(kernelSupport().encoding, nr, cmd);
  if (ret < 0) {
    return Result<Unit>::fail(SysError::from(ret, std::string(opName(nr)), "device " + std::to_string(id)));
  }
  return Result<Unit>{Unit{}, {}};
}

template <typename T>
Result<T> runWithBuffer(uint32_t id, unsigned nr, T value) {
  ublksrv_ctrl_cmd cmd = makeCmd(id);
  cmd.addr = reinterpret_cast<uint64_t>(&value);
  cmd.len = sizeof(value);
  Result<Unit> r = run(id, nr, cmd);
  if (!r.ok()) return Result<T>::fail(r.error);
  return Result<T>{value, {}};
}

}  // namespace

const KernelSupport &kernelSupport() {
  static const KernelSupport ks = probe();
  return ks;
}

Result<ublksrv_ctrl_dev_info> UblkControl::addDevice(const ublksrv_ctrl_dev_info &request) {
  return runWithBuffer(request.dev_id, UBLK_CMD_ADD_DEV, request);
}

Result<Unit> UblkControl::setParams(uint32_t id, const ublk_params &params) {
  Result<ublk_params> r = runWithBuffer(id, UBLK_CMD_SET_PARAMS, params);
  if (!r.ok()) return Result<Unit>::fail(r.error);
  return Result<Unit>{Unit{}, {}};
}

Result<ublk_params> UblkControl::getParams(uint32_t id) {
  ublk_params p{};
  p.len = sizeof(p);
  return runWithBuffer(id, UBLK_CMD_GET_PARAMS, p);
}

Result<ublksrv_ctrl_dev_info> UblkControl::getInfo(uint32_t id) {
  return runWithBuffer(id, UBLK_CMD_GET_DEV_INFO, ublksrv_ctrl_dev_info{});
}

Result<Unit> UblkControl::start(uint32_t id, int serverPid) {
  ublksrv_ctrl_cmd cmd = makeCmd(id);
  cmd.data[0] = static_cast<uint64_t>(serverPid);
  return run(id, UBLK_CMD_START_DEV, cmd);
}

Result<Unit> UblkControl::stop(uint32_t id) { return run(id, UBLK_CMD_STOP_DEV, makeCmd(id)); }

Result<Unit> UblkControl::tryStop(uint32_t id) { return run(id, UBLK_CMD_TRY_STOP_DEV, makeCmd(id)); }

Result<Unit> UblkControl::updateSize(uint32_t id, uint64_t bytes) {
  ublksrv_ctrl_cmd cmd = makeCmd(id);
  cmd.data[0] = bytes >> 9;
  return run(id, UBLK_CMD_UPDATE_SIZE, cmd);
}

Result<Unit> UblkControl::remove(uint32_t id) { return run(id, UBLK_CMD_DEL_DEV, makeCmd(id)); }

Result<Unit> UblkControl::startRecovery(uint32_t id) {
  return run(id, UBLK_CMD_START_USER_RECOVERY, makeCmd(id));
}

Result<Unit> UblkControl::endRecovery(uint32_t id, int serverPid) {
  ublksrv_ctrl_cmd cmd = makeCmd(id);
  cmd.data[0] = static_cast<uint64_t>(serverPid);
  return run(id, UBLK_CMD_END_USER_RECOVERY, cmd);
}

}  // namespace ubloop
