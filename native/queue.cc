#include "queue.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "spin_clock.h"
#include "target.h"
#include "user_data.h"

namespace ubloop {
namespace {

using user_data::Kind;

// Ring flags in order of preference; Linux 6.1 takes the first set, older kernels a
// later one.
constexpr unsigned kRingFlagChoices[] = {
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER,
    IORING_SETUP_COOP_TASKRUN,
    0,
};

// A queue with nothing in flight for this long gives its buffer pages back to the
// system; they fault in again, zeroed, when requests return.
constexpr long long kIdleReleaseNs = 2'000'000'000;

// How long a failed queue waits for its in-flight backing I/O before giving up on it
// (and keeping its buffers mapped, since the kernel may still write into them).
constexpr unsigned kDrainMs = 5000;

size_t pageAlign(size_t n) {
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}

// UBLOOP_INJECT_QUEUE_FAULT=ERRNO:N (e.g. EIO:40): a test hook that makes the Nth
// wait of each queue loop fail with ERRNO, as if io_uring_enter had returned it.
void parseFault(int &err, uint64_t &after) {
  const char *v = getenv("UBLOOP_INJECT_QUEUE_FAULT");
  if (v == nullptr) return;
  const char *colon = strchr(v, ':');
  if (colon == nullptr) return;
  const std::string name(v, colon);
  for (int e = 1; e < 4096; e++) {
    const char *n = strerrorname_np(e);
    if (n != nullptr && name == n) {
      err = e;
      after = strtoull(colon + 1, nullptr, 10);
      return;
    }
  }
}

}  // namespace

Queue::Queue(const DeviceSpec &spec, uint16_t qid, int charFd, abi::Encoding enc, std::function<void()> onFailed)
    : spec_(spec),
      qid_(qid),
      charFd_(charFd),
      enc_(enc),
      target_(targetFor(spec.target)),
      path_(spec.dataPath),
      onFailed_(std::move(onFailed)) {}

Queue::~Queue() { join(); }

std::optional<SysError> Queue::start() {
  int err = pthread_create(&thread_, nullptr, &Queue::threadMain, this);
  if (err != 0) return SysError::from(err, "pthread_create");
  threadStarted_ = true;
  std::unique_lock<std::mutex> lock(readyMutex_);
  readyCv_.wait(lock, [this] { return readyReported_; });
  return readyError_;
}

void Queue::join() {
  if (!threadStarted_) return;
  pthread_join(thread_, nullptr);
  threadStarted_ = false;
}

void Queue::requestExit() {
  exitRequested_.store(true);
  std::lock_guard<std::mutex> lock(wakeMutex_);
  if (wakeFd_ >= 0) eventfd_write(wakeFd_, 1);
}

QueueSnapshot Queue::snapshot() const {
  return QueueSnapshot{
      counters_.ops.get(),
      counters_.bytesRead.get(),
      counters_.bytesWritten.get(),
      counters_.errors.get(),
      counters_.enters.get(),
      counters_.bufferReleases.get(),
      counters_.registrations.get(),
      counters_.readErrors.get(),
      counters_.writeErrors.get(),
      counters_.flushErrors.get(),
      counters_.discardErrors.get(),
      int(counters_.lastError.load(std::memory_order_relaxed) >> 8),
      uint8_t(counters_.lastError.load(std::memory_order_relaxed) & 0xff),
      counters_.lastErrorAtMs.load(std::memory_order_relaxed),
      tid_.load(std::memory_order_relaxed),
      ringFlags_,
      [this] {
        std::lock_guard<std::mutex> lock(failureMutex_);
        return failure_;
      }(),
  };
}

void Queue::reportReady(std::optional<SysError> err) {
  std::lock_guard<std::mutex> lock(readyMutex_);
  readyError_ = std::move(err);
  readyReported_ = true;
  readyCv_.notify_all();
}

void *Queue::threadMain(void *arg) {
  auto *q = static_cast<Queue *>(arg);
  q->tid_.store(static_cast<int>(syscall(SYS_gettid)));
  char name[16];
  snprintf(name, sizeof(name), "ubloop-q%u", q->qid_);
  pthread_setname_np(pthread_self(), name);

  if (auto err = q->setup()) {
    q->teardown();
    q->reportReady(std::move(err));
    return nullptr;
  }
  q->fetchAll();
  // FETCH never completes before START_DEV unless the kernel refused it; a CQE here
  // means the queue cannot serve.
  io_uring_cqe *cqe = nullptr;
  if (io_uring_peek_cqe(&q->ring_, &cqe) == 0) {
    SysError err = SysError::from(cqe->res, "FETCH_REQ", "queue " + std::to_string(q->qid_));
    q->teardown();
    q->reportReady(std::move(err));
    return nullptr;
  }
  q->reportReady(std::nullopt);
  q->serve();
  q->drainBackingIo();
  q->teardown();
  bool failed;
  {
    std::lock_guard<std::mutex> lock(q->failureMutex_);
    failed = q->failure_.has_value();
  }
  if (failed && q->onFailed_) q->onFailed_();
  return nullptr;
}

std::optional<SysError> Queue::setup() {
  const std::string where = "queue " + std::to_string(qid_);
  // Each tag has at most one command, one backing I/O (or user-copy transfer) and one
  // buffer (un)registration queued at once, plus the wake-up read.
  unsigned entries = 3u * spec_.depth + 1;
  int ret = -EINVAL;
  for (unsigned flags : kRingFlagChoices) {
    ret = io_uring_queue_init(entries, &ring_, flags);
    if (ret == 0) {
      ringFlags_ = flags;
      break;
    }
    if (ret != -EINVAL) break;
  }
  if (ret < 0) return SysError::from(ret, "io_uring_setup", where);
  ringUp_ = true;

  wakeFd_ = eventfd(0, EFD_CLOEXEC);
  if (wakeFd_ < 0) return SysError::from(errno, "eventfd", where);

  // The idle release (MADV_DONTNEED) must never meet a request being delivered: on a
  // kernel-copy device the kernel copies a WRITE's data into its buffer while
  // delivering it, and a release after that copy would zero the data. Delivery runs
  // as io_uring task work when the device has URING_CMD_COMP_IN_TASK (requested by
  // Device, forced by newer kernels); on a DEFER_TASKRUN ring that work runs only
  // inside this thread's io_uring_enter, so between an enter that found nothing and
  // the next one no copy can happen. Without both (6.1 built-in ublk otherwise uses
  // task_work_add, which runs on any return to user mode, e.g. from madvise itself)
  // the buffers are never released.
  canReleaseBuffers_ = (ringFlags_ & IORING_SETUP_DEFER_TASKRUN) != 0 &&
                       (spec_.grantedFlags & UBLK_F_URING_CMD_COMP_IN_TASK) != 0;
  parseFault(faultErrno_, faultAfterWaits_);

  const bool copyLess = path_ == DataPath::ZeroCopy || path_ == DataPath::AutoBufReg;
  if (copyLess) {
    // The request pages go in this ring's buffer table at index = tag (automatic
    // registration requires the table on the ring that fetches).
    const char *hook = getenv("UBLOOP_INJECT_AUTO_REG_FAIL");
    if (hook != nullptr && path_ == DataPath::AutoBufReg) autoRegFailEvery_ = strtoull(hook, nullptr, 10);
    ret = io_uring_register_buffers_sparse(&ring_, spec_.depth + (autoRegFailEvery_ > 0 ? 1 : 0));
    if (ret < 0) return SysError::from(ret, "io_uring_register_buffers_sparse", where);
    if (autoRegFailEvery_ > 0) {
      static char dummy[4096];
      iovec iov{dummy, sizeof(dummy)};
      ret = io_uring_register_buffers_update_tag(&ring_, spec_.depth, &iov, nullptr, 1);
      if (ret < 0) return SysError::from(ret, "io_uring_register_buffers_update_tag", where);
    }
    // A READ's pages must be filled to the end (else the reader would see whatever
    // they held): past the image's end, by a read of this file.
    zeroFd_ = memfd_create("ubloop-zeros", MFD_CLOEXEC);
    if (zeroFd_ < 0 || ftruncate(zeroFd_, spec_.maxIoBytes) != 0) return SysError::from(errno, "memfd_create", where);
  }
  int files[3] = {charFd_, spec_.backingFd, zeroFd_};  // -1: an empty slot
  ret = io_uring_register_files(&ring_, files, 3);
  if (ret < 0) return SysError::from(ret, "io_uring_register_files", where);

  descBytes_ = pageAlign(spec_.depth * sizeof(ublksrv_io_desc));
  void *d = mmap(nullptr, descBytes_, PROT_READ, MAP_SHARED | MAP_POPULATE, charFd_,
                 static_cast<off_t>(abi::descOffset(qid_)));
  if (d == MAP_FAILED) return SysError::from(errno, "mmap io descriptors", where);
  descs_ = static_cast<ublksrv_io_desc *>(d);

  // One buffer per tag, page aligned (O_DIRECT needs it). Pages are touched only when
  // a request of that size arrives, so an idle device costs little memory.
  bufferBytes_ = size_t(spec_.depth) * spec_.maxIoBytes;
  void *b = mmap(nullptr, bufferBytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (b == MAP_FAILED) return SysError::from(errno, "mmap I/O buffers", where);
  buffers_ = static_cast<char *>(b);

  slots_.resize(spec_.depth);
  SpinClock::calibrate();  // polling and the idle release time with it; measure before serving
  pendingCommits_.reserve(spec_.depth);
  for (uint16_t tag = 0; tag < spec_.depth; tag++) slots_[tag].buf = buffers_ + size_t(tag) * spec_.maxIoBytes;
  return std::nullopt;
}

void Queue::fetchAll() {
  armWake();
  for (uint16_t tag = 0; tag < spec_.depth; tag++) queueCommand(tag, UBLK_IO_FETCH_REQ, 0);
  io_uring_submit(&ring_);
}

void Queue::armWake() {
  io_uring_sqe *s = sqe();
  io_uring_prep_read(s, wakeFd_, &wakeValue_, sizeof(wakeValue_), 0);
  s->user_data = user_data::encode(Kind::Wake, 0);
}

io_uring_sqe *Queue::sqe() {
  io_uring_sqe *s = io_uring_get_sqe(&ring_);
  while (s == nullptr) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  return s;
}

namespace {

io_uring_sqe *prepIoCommand(io_uring_sqe *s, unsigned cmdOp, uint16_t qid, uint16_t tag, int result, uint64_t addr) {
  memset(s, 0, sizeof(*s));
  s->opcode = IORING_OP_URING_CMD;
  s->fd = 0;  // registered slot of /dev/ublkcN
  s->flags = IOSQE_FIXED_FILE;
  s->cmd_op = cmdOp;
  auto *cmd = reinterpret_cast<ublksrv_io_cmd *>(&s->cmd);
  cmd->q_id = qid;
  cmd->tag = tag;
  cmd->result = result;
  cmd->addr = addr;
  return s;
}

}  // namespace

// FETCH and COMMIT_AND_FETCH: with the kernel copy they name our buffer for the tag;
// the other paths pass 0 there, and automatic registration passes the buffer table
// index (the tag) in the SQE's own addr, asking for a fallback to our registration
// where the device has explicit registration too.
void Queue::queueCommand(uint16_t tag, unsigned op, int result) {
  const uint64_t addr = path_ == DataPath::KernelCopy ? reinterpret_cast<uint64_t>(slots_[tag].buf) : 0;
  io_uring_sqe *s = prepIoCommand(sqe(), abi::ioOp(enc_, op), qid_, tag, result, addr);
  if (path_ == DataPath::AutoBufReg) {
    const bool fallback = spec_.grantedFlags & UBLK_F_SUPPORT_ZERO_COPY;
    const bool failIt = autoRegFailEvery_ > 0 && ++autoRegCommands_ % autoRegFailEvery_ == 0;
    s->addr = abi::autoBufReg(failIt ? spec_.depth : tag, fallback ? UBLK_AUTO_BUF_REG_FALLBACK : 0);
  }
  s->user_data = user_data::encode(Kind::Command, tag);
  liveCommands_++;
}

void Queue::issueBacking(io_uring_sqe *s, uint16_t tag, uint8_t op) {
  s->flags |= IOSQE_FIXED_FILE;
  s->user_data = user_data::encode(Kind::Backing, tag, op);
  inflight_++;
}

bool Queue::hasData(uint16_t tag) const {
  const uint8_t op = ublksrv_get_op(&descs_[tag]);
  return op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE;
}

// Whether backing I/O works on the request's own pages (fixed buffer `tag`).
bool Queue::requestPagesAreBuffer() const {
  return path_ == DataPath::AutoBufReg || path_ == DataPath::ZeroCopy;
}

void Queue::prepRead(io_uring_sqe *s, int file, uint16_t tag, uint32_t at, uint32_t len, uint64_t fileOffset) {
  if (requestPagesAreBuffer()) {
    // A registered request buffer starts at address 0.
    io_uring_prep_read_fixed(s, file, reinterpret_cast<void *>(uintptr_t(at)), len, fileOffset, tag);
  } else {
    io_uring_prep_read(s, file, slots_[tag].buf + at, len, fileOffset);
  }
}

void Queue::prepWrite(io_uring_sqe *s, int file, uint16_t tag, uint32_t at, uint32_t len, uint64_t fileOffset) {
  if (requestPagesAreBuffer()) {
    io_uring_prep_write_fixed(s, file, reinterpret_cast<const void *>(uintptr_t(at)), len, fileOffset, tag);
  } else {
    io_uring_prep_write(s, file, slots_[tag].buf + at, len, fileOffset);
  }
}

bool Queue::zeroFill(uint16_t tag, uint32_t at, uint32_t len) {
  if (!requestPagesAreBuffer()) {
    memset(slots_[tag].buf + at, 0, len);
    return true;
  }
  io_uring_sqe *s = sqe();
  prepRead(s, kZeroFile, tag, at, len, 0);
  issueBacking(s, tag, UBLK_IO_OP_READ);
  return false;
}

// A request has arrived at tag. Before the target sees it: explicit registration of
// its pages (zero copy, or an automatic registration that failed), or for a WRITE
// under user copy the copy of its data into our buffer.
void Queue::startRequest(uint16_t tag) {
  IoSlot &slot = slots_[tag];
  slot.done = 0;
  slot.retries = 0;
  slot.registered = false;
  if (hasData(tag) && (path_ == DataPath::ZeroCopy ||
                       (path_ == DataPath::AutoBufReg && (descs_[tag].op_flags & UBLK_IO_F_NEED_REG_BUF)))) {
    queueBufferCommand(tag, true);
    return;
  }
  if (path_ == DataPath::UserCopy && ublksrv_get_op(&descs_[tag]) == UBLK_IO_OP_WRITE) {
    queueTransfer(tag, UBLK_IO_OP_WRITE);
    return;
  }
  target_.start(*this, tag);
}

void Queue::queueBufferCommand(uint16_t tag, bool reg) {
  const unsigned op = reg ? UBLK_U_IO_REGISTER_IO_BUF : UBLK_U_IO_UNREGISTER_IO_BUF;
  io_uring_sqe *s = prepIoCommand(sqe(), op, qid_, tag, 0, tag);
  s->user_data = user_data::encode(Kind::BufReg, tag, reg ? 1 : 0);
  inflight_++;
  if (reg) counters_.registrations.add(1);
}

void Queue::bufferCommandDone(uint16_t tag, bool reg, int res) {
  if (!reg) {
    // The request completes anyway once committed; a buffer left in the table is
    // replaced by the next registration at this index.
    if (res < 0) counters_.errors.add(1);
    return;
  }
  if (res < 0) {
    finishCommit(tag, res);
    return;
  }
  slots_[tag].registered = true;
  target_.start(*this, tag);
}

// User copy: a WRITE's data from /dev/ublkcN into our buffer (op WRITE), or a READ's
// data from our buffer to /dev/ublkcN (op READ), continued until all of it moved.
void Queue::queueTransfer(uint16_t tag, uint8_t op) {
  IoSlot &slot = slots_[tag];
  const uint32_t len = op == UBLK_IO_OP_WRITE ? descs_[tag].nr_sectors << 9 : uint32_t(slot.result);
  const uint64_t at = abi::userCopyOffset(qid_, tag, slot.done);
  io_uring_sqe *s = sqe();
  if (op == UBLK_IO_OP_WRITE) {
    io_uring_prep_read(s, 0, slot.buf + slot.done, len - slot.done, at);
  } else {
    io_uring_prep_write(s, 0, slot.buf + slot.done, len - slot.done, at);
  }
  s->flags |= IOSQE_FIXED_FILE;
  s->user_data = user_data::encode(Kind::Transfer, tag, op);
  inflight_++;
}

void Queue::transferDone(uint16_t tag, uint8_t op, int res) {
  IoSlot &slot = slots_[tag];
  const uint32_t len = op == UBLK_IO_OP_WRITE ? descs_[tag].nr_sectors << 9 : uint32_t(slot.result);
  if (res <= 0) {
    finishCommit(tag, res < 0 ? res : -EIO);
    return;
  }
  slot.done += unsigned(res);
  if (slot.done < len) {
    queueTransfer(tag, op);
    return;
  }
  slot.done = 0;
  if (op == UBLK_IO_OP_WRITE) {
    target_.start(*this, tag);
  } else {
    finishCommit(tag, slot.result);
  }
}

void Queue::commit(uint16_t tag, int result) {
  if (path_ == DataPath::UserCopy && result > 0 && ublksrv_get_op(&descs_[tag]) == UBLK_IO_OP_READ) {
    slots_[tag].result = result;
    slots_[tag].done = 0;
    queueTransfer(tag, UBLK_IO_OP_READ);
    return;
  }
  finishCommit(tag, result);
}

// Our registration goes before the commit (queued ahead of it): the kernel completes
// the request once both are done, and only then can the tag's index be used again.
void Queue::finishCommit(uint16_t tag, int result) {
  if (slots_[tag].registered) {
    queueBufferCommand(tag, false);
    slots_[tag].registered = false;
  }
  const ublksrv_io_desc &d = descs_[tag];
  counters_.ops.add(1);
  if (result < 0) {
    countFailure(ublksrv_get_op(&d), result);
  } else if (ublksrv_get_op(&d) == UBLK_IO_OP_READ) {
    counters_.bytesRead.add(unsigned(result));
  } else if (ublksrv_get_op(&d) == UBLK_IO_OP_WRITE) {
    counters_.bytesWritten.add(unsigned(result));
  }
  pendingCommits_.push_back({tag, result});
}

// A request is committed with -errno: the kernel fails it with the matching
// blk_status (errno_to_blk_status: -ENOSPC becomes BLK_STS_NOSPC, which the reader or
// writer sees as ENOSPC again; an errno it has no status for becomes EIO).
void Queue::countFailure(uint8_t op, int result) {
  counters_.errors.add(1);
  switch (op) {
    case UBLK_IO_OP_READ: counters_.readErrors.add(1); break;
    case UBLK_IO_OP_WRITE: counters_.writeErrors.add(1); break;
    case UBLK_IO_OP_FLUSH: counters_.flushErrors.add(1); break;
    case UBLK_IO_OP_DISCARD:
    case UBLK_IO_OP_WRITE_ZEROES: counters_.discardErrors.add(1); break;
    default: break;
  }
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  counters_.lastErrorAtMs.store(uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1'000'000, std::memory_order_relaxed);
  counters_.lastError.store((uint32_t(-result) << 8) | op, std::memory_order_relaxed);
}

void Queue::queuePendingCommits() {
  for (const PendingCommit &c : pendingCommits_) queueCommand(c.tag, UBLK_IO_COMMIT_AND_FETCH_REQ, c.result);
  pendingCommits_.clear();
}

// Busy-polls for up to pollUs before the loop sleeps: each io_uring_enter(GETEVENTS)
// runs the task work that delivers backing completions and new ublk requests, so an
// event that arrives within pollUs costs no sleep and wake-up of the queue thread.
// serve() only polls while no image I/O is in flight (what is awaited is then the
// kernel's next request, which a busy client sends within microseconds; an image I/O
// takes as long as the disk does, and spinning through it takes the CPU its
// completion and the client need: measured on 7.3, 4k random writes at QD32 ran at
// 0.4-0.6x of the speed without polling) and while the recent waits were shorter
// than pollUs, so a device whose requests are sparse sleeps at once.
void Queue::pollForCompletion() {
  const uint64_t deadline = SpinClock::deadlineAfterUs(spec_.pollUs);
  do {
    io_uring_submit_and_get_events(&ring_);
    counters_.enters.add(1);
    if (io_uring_cq_ready(&ring_) > 0) return;
  } while (!SpinClock::passed(deadline));
}

// The hot loop: one io_uring_enter submits every commit and backing I/O queued since
// the last pass and waits for at least one completion; then every CQE is handled
// and the CQ is advanced once.
void Queue::serve() {
  while (!exiting_ && (liveCommands_ > 0 || inflight_ > 0)) {
    if (spec_.pollUs > 0 && io_uring_cq_ready(&ring_) == 0) {
      const uint64_t waitStart = SpinClock::now();
      if (gapUs_ < spec_.pollUs && inflight_ <= 1) pollForCompletion();
      if (!waitForEvents()) return;
      // A moving average (weight 1/8) of the wait, capped so one long idle spell
      // is forgotten after a few quick events.
      const uint32_t gap = std::min(SpinClock::usSince(waitStart), 4 * spec_.pollUs);
      gapUs_ = gapUs_ - gapUs_ / 8 + gap / 8;
    } else if (!waitForEvents()) {
      return;
    }
    unsigned head, seen = 0;
    io_uring_cqe *cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      handle(*cqe);
      seen++;
    }
    io_uring_cq_advance(&ring_, seen);
    queuePendingCommits();
  }
}

// Submits what is queued and, unless completions are already waiting, sleeps until
// one arrives. With every tag back with the kernel and nothing in flight, the sleep
// is bounded: after kIdleReleaseNs without a request the buffers are released.
// Returns false when the queue cannot go on (the ring failed).
bool Queue::waitForEvents() {
  if (io_uring_cq_ready(&ring_) > 0 && io_uring_sq_ready(&ring_) == 0) return true;
  const bool idle = inflight_ == 0 && io_uring_cq_ready(&ring_) == 0;
  int ret;
  // The bounded wait needs IORING_FEAT_EXT_ARG (5.11+), or liburing would queue a
  // timeout SQE of its own.
  if (idle && buffersUsed_ && canReleaseBuffers_ && (ring_.features & IORING_FEAT_EXT_ARG)) {
    __kernel_timespec ts{kIdleReleaseNs / 1'000'000'000, kIdleReleaseNs % 1'000'000'000};
    io_uring_cqe *cqe = nullptr;
    // Timed with CLOCK_MONOTONIC: once per 2 s it costs nothing, and it does not
    // depend on SpinClock's measured rate.
    const uint64_t start = monotonicNs();
    ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    // A wait that also submitted returns the count, not -ETIME: the time tells.
    if (io_uring_cq_ready(&ring_) == 0 && monotonicNs() - start >= kIdleReleaseNs * 9 / 10) {
      releaseIdleBuffers();
    }
  } else {
    ret = io_uring_submit_and_wait(&ring_, io_uring_cq_ready(&ring_) > 0 ? 0 : 1);
  }
  counters_.enters.add(1);
  if (faultErrno_ != 0 && ++waits_ == faultAfterWaits_) ret = -faultErrno_;
  if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
    fail(SysError::from(ret, "io_uring_enter"));  // the queue number is added by who reports it
    return false;
  }
  return true;
}

// Called only between two io_uring_enter calls that delivered nothing (see setup()).
void Queue::releaseIdleBuffers() {
  madvise(buffers_, bufferBytes_, MADV_DONTNEED);
  buffersUsed_ = false;
  counters_.bufferReleases.add(1);
}

// The queue stops serving. Its requests fail once the kernel sees the server gone:
// the device (onFailed) then stops its other queues and closes its own descriptor of
// /dev/ublkcN, and when the last reference goes the kernel aborts every request still
// with the server (Linux 7.x does that only on release of the char device; 6.1's
// monitor also notices the thread gone). The error stays readable through snapshot()
// so that the device shows as failed.
void Queue::fail(SysError err) {
  fprintf(stderr, "ubloop: queue %u failed: %s; its device's I/O will fail\n", qid_, describe(err).c_str());
  std::lock_guard<std::mutex> lock(failureMutex_);
  failure_ = std::move(err);
}

// Backing I/O still in flight writes into (or reads from) the buffers: wait for it,
// within a bound, before the ring and the buffers go. Nothing is committed.
void Queue::drainBackingIo() {
  unsigned waitedMs = 0;
  while (inflight_ > 0 && waitedMs < kDrainMs) {
    __kernel_timespec ts{0, 100'000'000};
    io_uring_cqe *cqe = nullptr;
    int ret = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    if (ret == -ETIME || ret == -EINTR) {
      waitedMs += 100;
      continue;
    }
    if (ret < 0) break;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      const Kind k = user_data::kindOf(cqe->user_data);
      if (k == Kind::Backing || k == Kind::Transfer || k == Kind::BufReg) inflight_--;
      seen++;
    }
    io_uring_cq_advance(&ring_, seen);
  }
}

void Queue::handle(const io_uring_cqe &cqe) {
  const uint16_t tag = user_data::tagOf(cqe.user_data);
  if (user_data::kindOf(cqe.user_data) == Kind::Wake) {
    if (exitRequested_.load()) {
      exiting_ = true;
    } else {
      armWake();
    }
    return;
  }
  switch (user_data::kindOf(cqe.user_data)) {
    case Kind::Backing:
      inflight_--;
      target_.backingDone(*this, tag, user_data::opOf(cqe.user_data), cqe.res);
      return;
    case Kind::Transfer:
      inflight_--;
      transferDone(tag, user_data::opOf(cqe.user_data), cqe.res);
      return;
    case Kind::BufReg:
      inflight_--;
      bufferCommandDone(tag, user_data::opOf(cqe.user_data) == 1, cqe.res);
      return;
    default:
      break;
  }
  liveCommands_--;
  if (cqe.res == UBLK_IO_RES_OK) {
    buffersUsed_ = true;
    startRequest(tag);
  } else if (cqe.res != UBLK_IO_RES_ABORT) {
    // The kernel refused a command (the device is going away, or a bug): this tag
    // stops serving; the device's own teardown reports the rest.
    counters_.errors.add(1);
  }
}

// The ring goes first: it cancels what is still queued on it, so that nothing the
// kernel does for this ring can touch the buffers once they are unmapped. Backing I/O
// that drainBackingIo() could not wait out keeps its buffers mapped (a leak, never a
// write into freed memory).
void Queue::teardown() {
  if (ringUp_) io_uring_queue_exit(&ring_);
  ringUp_ = false;
  {
    std::lock_guard<std::mutex> lock(wakeMutex_);
    if (wakeFd_ >= 0) close(wakeFd_);
    wakeFd_ = -1;
  }
  if (zeroFd_ >= 0) close(zeroFd_);
  zeroFd_ = -1;
  if (buffers_ && inflight_ == 0) munmap(buffers_, bufferBytes_);
  buffers_ = nullptr;
  if (descs_) munmap(descs_, descBytes_);
  descs_ = nullptr;
}

}  // namespace ubloop
