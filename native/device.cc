#include "device.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <thread>

namespace ubloop {
namespace {

uint8_t log2of(uint32_t v) {
  uint8_t s = 0;
  while ((1u << s) < v) s++;
  return s;
}

ublk_params paramsFor(const DeviceSpec &spec) {
  ublk_params p{};
  p.len = sizeof(p);
  p.types = UBLK_PARAM_TYPE_BASIC;
  // Volatile cache: flushes reach the target, which turns them into fdatasync.
  p.basic.attrs = UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA | (spec.readOnly ? UBLK_ATTR_READ_ONLY : 0);
  p.basic.logical_bs_shift = log2of(spec.blockSize);
  p.basic.physical_bs_shift = log2of(spec.blockSize < 4096 ? 4096 : spec.blockSize);
  p.basic.io_min_shift = p.basic.logical_bs_shift;
  p.basic.io_opt_shift = p.basic.physical_bs_shift;
  p.basic.max_sectors = spec.maxIoBytes >> 9;
  p.basic.dev_sectors = spec.size >> 9;
  if (spec.discard && !spec.readOnly) {
    p.types |= UBLK_PARAM_TYPE_DISCARD;
    p.discard.discard_granularity = 4096 > spec.blockSize ? 4096 : spec.blockSize;
    p.discard.max_discard_sectors = UINT32_MAX >> 9;
    p.discard.max_write_zeroes_sectors = UINT32_MAX >> 9;
    p.discard.max_discard_segments = 1;
  }
  return p;
}

// devtmpfs creates /dev/ublkcN as ADD_DEV returns, root's. udev may still be fixing
// its permissions; for a device added unprivileged, the node stays root's until udev
// (the rule in contrib/udev, running `ubloop udev`) hands it to the device's owner,
// which may take a while on a busy machine.
int openCharDevice(uint32_t id, bool unprivileged) {
  const std::string path = charDevicePath(id);
  const int attempts = unprivileged ? 3000 : 100;  // 30 s, 1 s
  for (int attempt = 0;; attempt++) {
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0 || attempt >= attempts || (errno != ENOENT && errno != EACCES)) return fd < 0 ? -errno : fd;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// CAP_SYS_ADMIN in the effective set: without it the kernel adds only unprivileged
// devices, which may not use the copy-less data paths.
bool hasCapSysAdmin() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &hdr, data) != 0) return geteuid() == 0;
  return (data[CAP_SYS_ADMIN / 32].effective >> (CAP_SYS_ADMIN % 32)) & 1;
}

// The UBLK_F_* flag a data path needs from the kernel.
uint64_t flagFor(DataPath p) {
  switch (p) {
    case DataPath::UserCopy: return UBLK_F_USER_COPY;
    case DataPath::ZeroCopy: return UBLK_F_SUPPORT_ZERO_COPY;
    case DataPath::AutoBufReg: return UBLK_F_AUTO_BUF_REG;
    default: return 0;
  }
}

const char *flagNameFor(DataPath p) {
  switch (p) {
    case DataPath::UserCopy: return "UBLK_F_USER_COPY";
    case DataPath::ZeroCopy: return "UBLK_F_SUPPORT_ZERO_COPY";
    case DataPath::AutoBufReg: return "UBLK_F_AUTO_BUF_REG";
    default: return "";
  }
}

// The data path a device gets: what was asked for if the kernel offers it and the
// caller may use it, or for Auto the fastest such (automatic registration, then
// explicit registration, then the kernel's copy). Decided from GET_FEATURES, never
// from a version number; a kernel without GET_FEATURES (6.1) has the kernel copy only.
Result<DataPath> resolveDataPath(DataPath asked, std::optional<uint64_t> features, bool privileged) {
  const uint64_t offered = features.value_or(0);
  if (asked == DataPath::Auto) {
    if (!privileged) return Result<DataPath>{DataPath::KernelCopy, {}};
    for (DataPath p : {DataPath::AutoBufReg, DataPath::ZeroCopy}) {
      if (offered & flagFor(p)) return Result<DataPath>{p, {}};
    }
    return Result<DataPath>{DataPath::KernelCopy, {}};
  }
  if (asked == DataPath::KernelCopy) return Result<DataPath>{asked, {}};
  const std::string mode = std::string("copy mode '") + dataPathName(asked) + "'";
  if (!(offered & flagFor(asked))) {
    return Result<DataPath>::fail(SysError::from(
        EOPNOTSUPP, "choose data path",
        mode + " needs " + flagNameFor(asked) + ", which this kernel does not offer" +
            (features ? "" : " (no GET_FEATURES: Linux 6.1 has the kernel copy only)")));
  }
  if (!privileged) {
    return Result<DataPath>::fail(SysError::from(
        EPERM, "choose data path", mode + " needs CAP_SYS_ADMIN: the kernel gives devices added without it the kernel copy only"));
  }
  return Result<DataPath>{asked, {}};
}

}  // namespace

Result<std::unique_ptr<Device>> Device::create(DeviceSpec spec) {
  std::unique_ptr<Device> dev(new Device(std::move(spec)));
  dev->size_.store(dev->spec_.size);
  if (auto err = dev->bringUp()) {
    dev->remove();
    return Result<std::unique_ptr<Device>>::fail(*err);
  }
  return Result<std::unique_ptr<Device>>{std::move(dev), {}};
}

std::optional<SysError> Device::bringUp() {
  const KernelSupport &ks = kernelSupport();
  if (!ks.present) return SysError::from(ks.openErrno, "open /dev/ublk-control");

  dropCachedImage();

  Result<DataPath> path = resolveDataPath(spec_.copy, ks.features, hasCapSysAdmin());
  if (!path.ok()) return path.error;
  spec_.dataPath = *path.value;
  // With automatic registration, explicit registration too where offered: a request
  // whose automatic registration fails then comes with UBLK_IO_F_NEED_REG_BUF
  // instead of failing, and the queue registers it itself.
  uint64_t pathFlags = flagFor(spec_.dataPath);
  if (spec_.dataPath == DataPath::AutoBufReg && ks.features && (*ks.features & UBLK_F_SUPPORT_ZERO_COPY)) {
    pathFlags |= UBLK_F_SUPPORT_ZERO_COPY;
  }

  ublksrv_ctrl_dev_info req{};
  req.nr_hw_queues = spec_.queues;
  req.queue_depth = spec_.depth;
  req.max_io_buf_bytes = spec_.maxIoBytes;
  req.dev_id = static_cast<uint32_t>(spec_.id);
  req.ublksrv_pid = getpid();
  // URING_CMD_COMP_IN_TASK: requests are delivered as io_uring task work, which the
  // queue rings (DEFER_TASKRUN) run only inside io_uring_enter; the idle buffer
  // release depends on that (see Queue::setup). Newer kernels set it anyway.
  // UPDATE_SIZE: `ubloop resize` where the kernel has it. A kernel drops the flags it
  // does not know, so what it grants is read back from ADD_DEV's answer.
  // UNPRIVILEGED_DEV where the kernel offers it: a caller without CAP_SYS_ADMIN needs
  // it, and the kernel drops it for one with (the device is then root's as ever);
  // such a caller always has the kernel copy, the one path it allows them.
  req.flags = spec_.flags | pathFlags | UBLK_F_URING_CMD_COMP_IN_TASK | UBLK_F_UPDATE_SIZE |
              (ks.encoding == abi::Encoding::Ioctl ? UBLK_F_CMD_IOCTL_ENCODE : 0) |
              (ks.features && (*ks.features & UBLK_F_UNPRIVILEGED_DEV) ? UBLK_F_UNPRIVILEGED_DEV : 0);

  Result<ublksrv_ctrl_dev_info> added = UblkControl::addDevice(req);
  if (!added.ok()) return added.error;
  info_ = *added.value;
  added_ = true;
  // The kernel may grant fewer queues (at most one per CPU) or a smaller buffer.
  spec_.queues = info_.nr_hw_queues;
  spec_.depth = info_.queue_depth;
  if (info_.max_io_buf_bytes < spec_.maxIoBytes) spec_.maxIoBytes = info_.max_io_buf_bytes;
  spec_.grantedFlags = info_.flags;
  if ((info_.flags & pathFlags) != pathFlags) {
    return SysError::from(EOPNOTSUPP, "choose data path",
                          std::string("the kernel did not grant ") + flagNameFor(spec_.dataPath) + " for copy mode '" +
                              dataPathName(spec_.dataPath) + "'");
  }

  // An unprivileged device's later commands need its node to be the caller's, so the
  // node is opened first: that is also the wait for udev to hand it over.
  const bool unprivileged = info_.flags & UBLK_F_UNPRIVILEGED_DEV;
  int fd = openCharDevice(id(), unprivileged);
  if (fd < 0 && unprivileged && fd == -EACCES) {
    return SysError::from(fd, "open " + charDevicePath(id()),
                          "the node is still root's after 30 s: nothing handed it to its owner (is the ubloop udev rule "
                          "installed? see contrib/udev); root can delete the device with `ubloop cleanup`");
  }
  if (fd < 0) return SysError::from(fd, "open " + charDevicePath(id()));
  charFd_ = fd;

  Result<Unit> set =
      UblkControl::setParams(id(), unprivileged ? Access::Unprivileged : Access::Privileged, paramsFor(spec_));
  if (!set.ok()) return set.error;

  if (auto err = startQueues(fd, ks.encoding)) return err;

  Result<Unit> started = UblkControl::start(id(), getpid());
  if (!started.ok()) return started.error;
  Result<ublksrv_ctrl_dev_info> now = UblkControl::getInfo(id());
  if (now.ok()) info_ = *now.value;
  return std::nullopt;
}

// An O_DIRECT image should start out of the page cache: io_uring issues each write
// without blocking, and 6.1's iomap answers EAGAIN for a write over cached pages,
// which sends it to an io-wq worker at several times the cost. Dirty pages are
// written back first (FADV_DONTNEED alone would skip them).
void Device::dropCachedImage() {
  if (spec_.backingFd >= 0 && (fcntl(spec_.backingFd, F_GETFL) & O_DIRECT)) {
    fdatasync(spec_.backingFd);
    posix_fadvise(spec_.backingFd, 0, 0, POSIX_FADV_DONTNEED);
  }
}

std::optional<SysError> Device::startQueues(int fd, abi::Encoding enc) {
  for (uint16_t q = 0; q < spec_.queues; q++) {
    {
      std::lock_guard<std::mutex> lock(queuesMutex_);
      queues_.push_back(std::make_unique<Queue>(spec_, q, fd, enc, [this] { queueFailed(); }));
    }
    if (auto err = queues_.back()->start()) return err;
  }
  return std::nullopt;
}

Result<std::unique_ptr<Device>> Device::recover(DeviceSpec spec) {
  std::unique_ptr<Device> dev(new Device(std::move(spec)));
  dev->size_.store(dev->spec_.size);
  if (auto err = dev->takeOver()) {
    dev->remove();  // before START_USER_RECOVERY only closes the image; after it, deletes
    return Result<std::unique_ptr<Device>>::fail(*err);
  }
  return Result<std::unique_ptr<Device>>{std::move(dev), {}};
}

std::optional<SysError> Device::takeOver() {
  const KernelSupport &ks = kernelSupport();
  if (!ks.present) return SysError::from(ks.openErrno, "open /dev/ublk-control");
  const uint32_t devId = static_cast<uint32_t>(spec_.id);
  const std::string what = "device " + std::to_string(devId);
  Result<ublksrv_ctrl_dev_info> cur = UblkControl::getInfo(devId);
  if (!cur.ok()) return cur.error;
  info_ = *cur.value;
  if (!(info_.flags & UBLK_F_USER_RECOVERY)) {
    return SysError::from(EINVAL, "START_USER_RECOVERY", what + " was not created recoverable (no UBLK_F_USER_RECOVERY)");
  }
  if (info_.state != UBLK_S_DEV_QUIESCED && info_.state != UBLK_S_DEV_FAIL_IO) {
    return SysError::from(EBUSY, "START_USER_RECOVERY",
                          what + (info_.state == UBLK_S_DEV_LIVE ? " is live" : " is not started") +
                              ", not waiting for a new server");
  }
  if (info_.flags & UBLK_F_UNPRIVILEGED_DEV) {
    return SysError::from(EPERM, "START_USER_RECOVERY", what + " is an unprivileged device, which the kernel never recovers");
  }
  // The device's own shape: what its first server was granted.
  spec_.queues = info_.nr_hw_queues;
  spec_.depth = info_.queue_depth;
  spec_.maxIoBytes = info_.max_io_buf_bytes;
  spec_.grantedFlags = info_.flags;
  spec_.dataPath = info_.flags & UBLK_F_AUTO_BUF_REG       ? DataPath::AutoBufReg
                   : info_.flags & UBLK_F_SUPPORT_ZERO_COPY ? DataPath::ZeroCopy
                   : info_.flags & UBLK_F_USER_COPY         ? DataPath::UserCopy
                                                            : DataPath::KernelCopy;
  dropCachedImage();

  Result<Unit> started = UblkControl::startRecovery(devId);
  if (!started.ok()) return started.error;
  added_ = true;  // ours now: from here a failure deletes it

  int fd = openCharDevice(devId, false);
  if (fd < 0) return SysError::from(fd, "open " + charDevicePath(devId));
  charFd_ = fd;
  if (auto err = startQueues(fd, ks.encoding)) return err;
  Result<Unit> ended = UblkControl::endRecovery(devId, getpid());
  if (!ended.ok()) return ended.error;
  Result<ublksrv_ctrl_dev_info> now = UblkControl::getInfo(devId);
  if (now.ok()) info_ = *now.value;
  return std::nullopt;
}

void Device::stopQueuesAndClose() {
  // The queues stay (joined) so that their final counters can still be read.
  for (auto &q : queues_) q->join();
  closeCharDevice();
}

void Device::closeCharDevice() {
  const int fd = charFd_.exchange(-1);
  if (fd >= 0) close(fd);
}

// Runs on the failed queue's thread, after its ring and mappings are gone. The other
// queues are told to exit (their rings and mappings also hold /dev/ublkcN); once they
// have and this descriptor is closed, the kernel releases the char device and fails
// every request the server still held, instead of leaving them to hang.
void Device::queueFailed() {
  {
    std::lock_guard<std::mutex> lock(queuesMutex_);
    for (auto &q : queues_) q->requestExit();
  }
  closeCharDevice();
  // A recoverable device would hold its I/O for a new server once /dev/ublkcN is
  // released (QUIESCED), but this process is still its server and alive: stop it, so
  // that its I/O fails with EIO as any failed device's does. remove() deletes it later.
  // Not from this thread: Linux 6.1 lets go of the requests this queue held only once
  // its monitor sees the queue's thread (this one) exiting, and STOP_DEV waits for
  // them, so a STOP_DEV sent from here would wait for itself. The detached thread
  // holds only the id.
  if (spec_.grantedFlags & UBLK_F_USER_RECOVERY) {
    uint32_t devId = id();
    std::thread([devId] { (void)UblkControl::stop(devId); }).detach();
  }
}

std::optional<SysError> Device::remove(bool onlyIfUnused) {
  std::lock_guard<std::mutex> lock(removeMutex_);
  std::optional<SysError> first;
  if (added_ && !removed_) {
    Result<Unit> stopped = Result<Unit>{Unit{}, {}};
    if (onlyIfUnused) {
      if (!(info_.flags & UBLK_F_SAFE_STOP_DEV)) {
        return SysError::from(EOPNOTSUPP, "TRY_STOP_DEV", "the kernel did not grant UBLK_F_SAFE_STOP_DEV");
      }
      // The kernel refuses while the disk is open (mounted, or held by anyone): the
      // device then stays exactly as it was.
      stopped = UblkControl::tryStop(id());
      if (!stopped.ok() && stopped.error.err == EBUSY) return stopped.error;
      // ENODEV: the disk is gone already (7.x removes it itself once a failed
      // server's /dev/ublkcN is released), so nobody can hold it: on to DEL_DEV.
      if (!stopped.ok() && stopped.error.err == ENODEV) stopped = Result<Unit>{Unit{}, {}};
    } else {
      // STOP_DEV removes the disk (waiting for in-flight I/O, which the queues keep
      // serving) and then aborts every queued command, which ends the queue threads.
      stopped = UblkControl::stop(id());
    }
    // Had the stop failed, the kernel would abort nothing: the threads are told to
    // exit, or the join below would wait forever.
    if (!stopped.ok()) {
      first = stopped.error;
      for (auto &q : queues_) q->requestExit();
    }
    stopQueuesAndClose();
    // DEL_DEV waits until /dev/ublkcN is released, so it must come after the close.
    Result<Unit> deleted = UblkControl::remove(id());
    if (!deleted.ok() && !first) first = deleted.error;
    removed_.store(true);
  }
  stopQueuesAndClose();
  if (spec_.backingFd >= 0) close(spec_.backingFd);
  spec_.backingFd = -1;
  return first;
}

std::optional<SysError> Device::resize(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(removeMutex_);
  if (removed_) return SysError::from(ENODEV, "UPDATE_SIZE", "the device has been removed");
  if (!(info_.flags & UBLK_F_UPDATE_SIZE)) {
    return SysError::from(EOPNOTSUPP, "UPDATE_SIZE", "the kernel did not grant UBLK_F_UPDATE_SIZE (Linux 6.16+)");
  }
  Result<Unit> r = UblkControl::updateSize(id(), bytes);
  if (!r.ok()) return r.error;
  size_.store(bytes);
  return std::nullopt;
}

std::optional<SysError> Device::handOver(uint64_t timeoutMs) {
  std::lock_guard<std::mutex> lock(removeMutex_);
  if (!added_ || removed_) return SysError::from(ENODEV, "QUIESCE_DEV", "the device has been removed");
  if (!(spec_.grantedFlags & UBLK_F_QUIESCE)) {
    return SysError::from(EOPNOTSUPP, "QUIESCE_DEV", "the kernel did not grant UBLK_F_QUIESCE (Linux 6.16+)");
  }
  Result<Unit> q = UblkControl::quiesce(id(), timeoutMs);
  if (!q.ok()) return q.error;
  // Every FETCH came back aborted: the queues end by themselves.
  stopQueuesAndClose();
  added_ = false;
  removed_.store(true);
  if (spec_.backingFd >= 0) close(spec_.backingFd);
  spec_.backingFd = -1;
  return std::nullopt;
}

Device::~Device() { remove(); }

std::vector<QueueSnapshot> Device::snapshot() const {
  std::vector<QueueSnapshot> out;
  for (const auto &q : queues_) out.push_back(q->snapshot());
  return out;
}

}  // namespace ubloop
