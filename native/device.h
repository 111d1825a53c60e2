// A ublk device served by this process: ADD_DEV + SET_PARAMS + queue threads +
// START_DEV on create(), STOP_DEV + join + DEL_DEV on remove(). create() either
// returns a live device or leaves nothing behind (no ublk id, no thread, no fd).
// Both block: call them off the JS thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "device_spec.h"
#include "queue.h"
#include "ublk_control.h"

namespace ubloop {

class Device {
 public:
  static Result<std::unique_ptr<Device>> create(DeviceSpec spec);
  // Takes over device spec.id, left QUIESCED (or FAIL_IO) by a server that died:
  // START_USER_RECOVERY, /dev/ublkcN opened again, queue threads FETCHing every tag,
  // END_USER_RECOVERY. The device keeps its id, disk and parameters; queues, depth,
  // buffer size and data path come from the device, the image and offset from spec.
  // Refused before anything changes (EINVAL: not recoverable, EBUSY: not waiting for
  // recovery, or the old server still holds /dev/ublkcN); a failure after
  // START_USER_RECOVERY deletes the device, so its held I/O fails instead of hanging.
  static Result<std::unique_ptr<Device>> recover(DeviceSpec spec);
  ~Device();

  // Stops and deletes the ublk device. Idempotent; returns the first error met, but
  // always goes through every step so that nothing is left half torn down.
  // With onlyIfUnused the kernel stops it only if nobody has the disk open
  // (TRY_STOP_DEV, devices granted UBLK_F_SAFE_STOP_DEV): on EBUSY nothing changes.
  std::optional<SysError> remove(bool onlyIfUnused = false);
  // Tells the kernel the device's new size in bytes (UPDATE_SIZE, devices granted
  // UBLK_F_UPDATE_SIZE); the queues need nothing, requests carry their own offsets.
  std::optional<SysError> resize(uint64_t bytes);
  uint64_t size() const { return size_.load(); }
  // Live upgrade (devices granted UBLK_F_QUIESCE): QUIESCE_DEV waits up to timeoutMs
  // (0: no limit) until no request is with the queues, then the kernel gives back
  // every command, the queue threads end and /dev/ublkcN is closed; the device stays,
  // QUIESCED, holding new I/O for the next server (Device::recover). Nothing of this
  // process deletes it afterwards (remove() then only closes the image).
  std::optional<SysError> handOver(uint64_t timeoutMs);

  uint32_t id() const { return info_.dev_id; }
  const ublksrv_ctrl_dev_info &info() const { return info_; }
  const DeviceSpec &spec() const { return spec_; }
  std::vector<QueueSnapshot> snapshot() const;
  bool removed() const { return removed_.load(); }

 private:
  explicit Device(DeviceSpec spec) : spec_(std::move(spec)) {}
  std::optional<SysError> bringUp();
  std::optional<SysError> takeOver();
  std::optional<SysError> startQueues(int fd, abi::Encoding enc);
  void dropCachedImage();
  void stopQueuesAndClose();
  void closeCharDevice();
  // A queue ended on a failure of its own: make the kernel fail the device's I/O.
  void queueFailed();

  DeviceSpec spec_;
  ublksrv_ctrl_dev_info info_{};
  bool added_ = false;
  std::atomic<bool> removed_{false};  // read from the JS thread while remove() runs
  std::atomic<uint64_t> size_{0};
  std::atomic<int> charFd_{-1};  // closed by remove() or by queueFailed() on a queue thread
  std::vector<std::unique_ptr<Queue>> queues_;
  std::mutex queuesMutex_;  // queueFailed() (a queue thread) against bringUp() adding queues
  std::mutex removeMutex_;
};

}  // namespace ubloop
