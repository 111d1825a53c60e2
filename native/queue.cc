#include "queue.h"

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
    : spec_(spec), qid_(qid), charFd_(charFd), enc_(enc), target_(targetFor(spec.target)), onFailed_(std::move(onFailed)) {}

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
      counters_.ops.load(std::memory_order_relaxed),
      counters_.bytesRead.load(std::memory_order_relaxed),
      counters_.bytesWritten.load(std::memory_order_relaxed),
      counters_.errors.load(std::memory_order_relaxed),
      counters_.enters.load(std::memory_order_relaxed),
      counters_.bufferReleases.load(std::memory_order_relaxed),
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
  // Each tag has at most one command and one backing I/O queued at once, plus the
  // wake-up read.
  unsigned entries = 2u * spec_.depth + 1;
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

  int files[2] = {charFd_, spec_.backingFd};
  ret = io_uring_register_files(&ring_, files, spec_.backingFd >= 0 ? 2 : 1);
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

void Queue::queueCommand(uint16_t tag, unsigned op, int result) {
  io_uring_sqe *s = sqe();
  memset(s, 0, sizeof(*s));
  s->opcode = IORING_OP_URING_CMD;
  s->fd = 0;  // registered slot of /dev/ublkcN
  s->flags = IOSQE_FIXED_FILE;
  s->cmd_op = abi::ioOp(enc_, op);
  auto *cmd = reinterpret_cast<ublksrv_io_cmd *>(&s->cmd);
  cmd->q_id = qid_;
  cmd->tag = tag;
  cmd->result = result;
  cmd->addr = reinterpret_cast<uint64_t>(slots_[tag].buf);
  s->user_data = user_data::encode(Kind::Command, tag);
  liveCommands_++;
}

void Queue::issueBacking(io_uring_sqe *s, uint16_t tag, uint8_t op) {
  s->flags |= IOSQE_FIXED_FILE;
  s->user_data = user_data::encode(Kind::Backing, tag, op);
  inflight_++;
}

void Queue::commit(uint16_t tag, int result) {
  const ublksrv_io_desc &d = descs_[tag];
  counters_.ops.fetch_add(1, std::memory_order_relaxed);
  if (result < 0) {
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
  } else if (ublksrv_get_op(&d) == UBLK_IO_OP_READ) {
    counters_.bytesRead.fetch_add(unsigned(result), std::memory_order_relaxed);
  } else if (ublksrv_get_op(&d) == UBLK_IO_OP_WRITE) {
    counters_.bytesWritten.fetch_add(unsigned(result), std::memory_order_relaxed);
  }
  pendingCommits_.push_back({tag, result});
}

void Queue::queuePendingCommits() {
  for (const PendingCommit &c : pendingCommits_) queueCommand(c.tag, UBLK_IO_COMMIT_AND_FETCH_REQ, c.result);
  pendingCommits_.clear();
}

// Busy-polls for up to pollUs before the loop sleeps: each io_uring_enter(GETEVENTS)
// runs the task work that delivers backing completions and new ublk requests, so an
// event that arrives within pollUs costs no sleep and wake-up of the queue thread.
// serve() only polls while the recent waits were shorter than pollUs, so a device
// whose I/O is sparse or slow sleeps at once instead of spinning in vain.
void Queue::pollForCompletion() {
  const uint64_t deadline = SpinClock::deadlineAfterUs(spec_.pollUs);
  do {
    io_uring_submit_and_get_events(&ring_);
    counters_.enters.fetch_add(1, std::memory_order_relaxed);
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
      if (gapUs_ < spec_.pollUs) pollForCompletion();
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
  counters_.enters.fetch_add(1, std::memory_order_relaxed);
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
  counters_.bufferReleases.fetch_add(1, std::memory_order_relaxed);
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
      if (user_data::kindOf(cqe->user_data) == Kind::Backing) inflight_--;
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
  if (user_data::kindOf(cqe.user_data) == Kind::Backing) {
    inflight_--;
    target_.backingDone(*this, tag, user_data::opOf(cqe.user_data), cqe.res);
    return;
  }
  liveCommands_--;
  if (cqe.res == UBLK_IO_RES_OK) {
    buffersUsed_ = true;
    slots_[tag].done = 0;
    slots_[tag].retries = 0;
    target_.start(*this, tag);
  } else if (cqe.res != UBLK_IO_RES_ABORT) {
    // The kernel refused a command (the device is going away, or a bug): this tag
    // stops serving; the device's own teardown reports the rest.
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
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
  if (buffers_ && inflight_ == 0) munmap(buffers_, bufferBytes_);
  buffers_ = nullptr;
  if (descs_) munmap(descs_, descBytes_);
  descs_ = nullptr;
}

}  // namespace ubloop
