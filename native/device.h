// A ublk device served by this process: ADD_DEV + SET_PARAMS + queue threads +
// START_DEV on create(), STOP_DEV + join + DEL_DEV on remove(). create() either
// returns a live device or leaves nothing behind (no ublk id, no thread, no fd).
// Both block: call them off the JS thread.
#pragma once

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
  ~Device();

  // Stops and deletes the ublk device. Idempotent; returns the first error met, but
  // always goes through every step so that nothing is left half torn down.
  std::optional<SysError> remove();

  uint32_t id() const { return info_.dev_id; }
  const ublksrv_ctrl_dev_info &info() const { return info_; }
  const DeviceSpec &spec() const { return spec_; }
  std::vector<QueueSnapshot> snapshot() const;
  bool removed() const { return removed_; }

 private:
  explicit Device(DeviceSpec spec) : spec_(std::move(spec)) {}
  std::optional<SysError> bringUp();
  void stopQueuesAndClose();

  DeviceSpec spec_;
  ublksrv_ctrl_dev_info info_{};
  bool added_ = false;
  bool removed_ = false;
  int charFd_ = -1;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::mutex removeMutex_;
};

}  // namespace ubloop
