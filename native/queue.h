// One ublk hardware queue, served by one thread that owns one io_uring.
//
// The thread: create the ring -> register files (slot 0 = /dev/ublkcN, slot 1 = the
// backing file) -> map the descriptor array and the I/O buffers -> FETCH every tag ->
// report ready -> serve until the kernel aborts every command -> tear down.
// Targets call sqe() / commit() from inside the loop; nothing here is thread-safe
// except stats() and the ready handshake.
#pragma once

#include <liburing.h>
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include "device_spec.h"
#include "errors.h"
#include "ublk_abi.h"

namespace ubloop {

struct Target;

// Per-tag state that a target needs across backing completions.
struct IoSlot {
  char *buf = nullptr;     // our buffer (kernel and user copy)
  uint32_t done = 0;       // bytes of a READ/WRITE already transferred (short I/O continues)
  uint8_t retries = 0;     // backing I/O reissued after -EAGAIN/-EINTR
  bool registered = false; // the request's pages are in the buffer table by our REGISTER_IO_BUF
  int result = 0;          // user copy: the result to commit once the READ's data is copied out
};

// A counter only the queue thread writes and any thread may read: a plain load and
// store instead of a locked read-modify-write on every I/O.
class QueueCounter {
 public:
  void add(uint64_t n) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

struct QueueCounters {
  QueueCounter ops;
  QueueCounter bytesRead;
  QueueCounter bytesWritten;
  QueueCounter errors;
  QueueCounter enters;  // io_uring_enter calls made by the loop
  QueueCounter bufferReleases;  // idle releases of the I/O buffers
  QueueCounter registrations;   // REGISTER_IO_BUF made by the queue (zero copy, auto-buf fallback)
  // Requests that failed, by ublk op (DISCARD and WRITE_ZEROES both count as discard),
  // and the last failure: touched on the error path only.
  QueueCounter readErrors;
  QueueCounter writeErrors;
  QueueCounter flushErrors;
  QueueCounter discardErrors;
  // errno << 8 | ublk op of the last failed request (0: none yet), and when it failed
  // (ms since the epoch). Two loads, so a reader may pair one failure's errno with the
  // next one's time; good enough for a report.
  std::atomic<uint32_t> lastError{0};
  std::atomic<uint64_t> lastErrorAtMs{0};
};

struct QueueSnapshot {
  uint64_t ops, bytesRead, bytesWritten, errors, enters, bufferReleases, registrations;
  uint64_t readErrors, writeErrors, flushErrors, discardErrors;
  int lastErrno;           // 0: no request has failed
  uint8_t lastErrorOp;     // the ublk op of that request
  uint64_t lastErrorAtMs;  // when it failed, ms since the epoch
  int tid;
  unsigned ringFlags;
  // Set once the queue thread has stopped serving on an error of its own (not by a
  // device stop): the device's I/O then fails. Empty while the queue is healthy.
  std::optional<SysError> failure;
};

class Queue {
 public:
  // onFailed runs on the queue thread after a failure of its own has ended it.
  Queue(const DeviceSpec &spec, uint16_t qid, int charFd, abi::Encoding enc, std::function<void()> onFailed);
  ~Queue();
  Queue(const Queue &) = delete;
  Queue &operator=(const Queue &) = delete;

  // Starts the thread and waits until it has fetched every tag (or failed).
  std::optional<SysError> start();
  // Waits for the thread to end; it ends once the kernel has aborted its commands,
  // or after requestExit().
  void join();
  // Asks the thread to stop serving now (through its ring), for when the kernel will
  // not abort its commands (a failed STOP_DEV). Thread-safe.
  void requestExit();
  QueueSnapshot snapshot() const;

  // --- for targets, on the queue thread ---
  io_uring_sqe *sqe();
  const ublksrv_io_desc &desc(uint16_t tag) const { return descs_[tag]; }
  IoSlot &slot(uint16_t tag) { return slots_[tag]; }
  const DeviceSpec &spec() const { return spec_; }
  // Registered file slots: the backing file, and (copy-less data paths) a file that
  // reads as zeros, for filling a request's pages the server cannot write directly.
  static constexpr int kBackingFile = 1;
  static constexpr int kZeroFile = 2;
  // Prepares a read from `file` into bytes [at, at+len) of tag's request data, or a
  // write of them to `file`, whichever buffer the data path uses (ours, or the
  // request's own pages as fixed buffer `tag`).
  void prepRead(io_uring_sqe *s, int file, uint16_t tag, uint32_t at, uint32_t len, uint64_t fileOffset);
  void prepWrite(io_uring_sqe *s, int file, uint16_t tag, uint32_t at, uint32_t len, uint64_t fileOffset);
  // Makes bytes [at, at+len) of a READ's data zeros: at once in our buffer (returns
  // true), or by a read of kZeroFile issued as backing I/O for UBLK_IO_OP_READ (false).
  bool zeroFill(uint16_t tag, uint32_t at, uint32_t len);
  // Whether backing I/O works on the request's own pages (the copy-less paths).
  bool requestPagesAreBuffer() const;
  // Marks an SQE prepared on kBackingFile as backing I/O for tag serving ublk op `op`.
  void issueBacking(io_uring_sqe *s, uint16_t tag, uint8_t op);
  // Finishes a request: COMMIT_AND_FETCH_REQ with result (bytes, or -errno), after
  // the user copy of a READ's data and the unregistration of its buffer.
  void commit(uint16_t tag, int result);

 private:
  static void *threadMain(void *self);
  std::optional<SysError> setup();
  void fetchAll();
  void serve();
  void handle(const io_uring_cqe &cqe);
  void teardown();
  void reportReady(std::optional<SysError> err);
  void queueCommand(uint16_t tag, unsigned op, int result);
  void startRequest(uint16_t tag);
  bool hasData(uint16_t tag) const;
  void queueBufferCommand(uint16_t tag, bool reg);
  void bufferCommandDone(uint16_t tag, bool reg, int res);
  void queueTransfer(uint16_t tag, uint8_t op);
  void transferDone(uint16_t tag, uint8_t op, int res);
  void finishCommit(uint16_t tag, int result);
  void countFailure(uint8_t op, int result);
  void queuePendingCommits();
  void pollForCompletion();
  bool waitForEvents();
  void armWake();
  void releaseIdleBuffers();
  void fail(SysError err);
  void drainBackingIo();

  const DeviceSpec &spec_;
  const uint16_t qid_;
  const int charFd_;
  const abi::Encoding enc_;
  const Target &target_;
  const DataPath path_;
  const std::function<void()> onFailed_;

  io_uring ring_{};
  bool ringUp_ = false;
  unsigned ringFlags_ = 0;
  // An eventfd whose read is always armed on the ring: writing it wakes the thread
  // (requestExit) without signals.
  int wakeFd_ = -1;
  int zeroFd_ = -1;  // copy-less paths: a sparse memfd of maxIoBytes, all zeros
  std::mutex wakeMutex_;  // requestExit() (any thread) against teardown's close
  uint64_t wakeValue_ = 0;
  std::atomic<bool> exitRequested_{false};
  bool exiting_ = false;
  // Releasing idle buffers is only safe where requests are delivered (and a WRITE's
  // data copied into its buffer) inside io_uring_enter alone; see setup().
  bool canReleaseBuffers_ = false;
  // Test hook (UBLOOP_INJECT_QUEUE_FAULT=ERRNO:N): the Nth wait of the loop fails
  // with ERRNO, as if io_uring_enter had returned it.
  int faultErrno_ = 0;
  uint64_t faultAfterWaits_ = 0;
  uint64_t waits_ = 0;
  // Test hook (UBLOOP_INJECT_AUTO_REG_FAIL=N, auto-buf only): every Nth FETCH/COMMIT
  // names buffer index `depth`, which a dummy buffer always occupies, so that the
  // kernel's automatic registration fails and the request takes the fallback.
  uint64_t autoRegFailEvery_ = 0;
  uint64_t autoRegCommands_ = 0;
  ublksrv_io_desc *descs_ = nullptr;
  size_t descBytes_ = 0;
  char *buffers_ = nullptr;
  size_t bufferBytes_ = 0;
  std::vector<IoSlot> slots_;
  // Commits made while handling one batch of CQEs; queued after that batch's backing
  // I/O so the disk starts on new work before the kernel copies finished reads.
  struct PendingCommit {
    uint16_t tag;
    int result;
  };
  std::vector<PendingCommit> pendingCommits_;
  unsigned liveCommands_ = 0;  // tags whose FETCH/COMMIT is with the kernel (or queued for it)
  unsigned inflight_ = 0;      // backing I/Os not yet completed
  bool buffersUsed_ = false;   // a request has touched the buffers since they were last released
  uint32_t gapUs_ = 0;         // moving average of how long the loop waits for its next event

  pthread_t thread_{};
  bool threadStarted_ = false;
  std::atomic<int> tid_{0};
  QueueCounters counters_;

  std::mutex readyMutex_;
  std::condition_variable readyCv_;
  bool readyReported_ = false;
  std::optional<SysError> readyError_;

  mutable std::mutex failureMutex_;
  std::optional<SysError> failure_;
};

}  // namespace ubloop
