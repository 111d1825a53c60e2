// What a device is asked to be: filled from the JS options (already validated in
// TypeScript, re-checked cheaply in native code) and shared read-only by the queues.
#pragma once

#include <cstdint>
#include <string>

namespace ubloop {

enum class TargetKind { Loop, Null };

struct DeviceSpec {
  int32_t id = -1;             // requested ublk id, -1 = let the kernel choose
  TargetKind target = TargetKind::Loop;
  int backingFd = -1;          // loop: the image (owned by the Device, a dup of the caller's)
  uint64_t offset = 0;         // loop: byte offset of the device's first byte in the image
  uint64_t size = 0;           // device size in bytes, a multiple of blockSize
  bool readOnly = false;
  uint16_t queues = 1;
  uint16_t depth = 128;
  uint32_t blockSize = 512;    // logical block size: 512, 1024, 2048 or 4096
  uint32_t maxIoBytes = 1u << 20;
  uint64_t flags = 0;          // UBLK_F_* asked for on top of what ubloop sets itself
  uint64_t grantedFlags = 0;   // UBLK_F_* that ADD_DEV returned (set by the Device)
  bool discard = true;         // advertise DISCARD / WRITE_ZEROES
  uint32_t pollUs = 0;         // spin up to this long for the queue's next event before sleeping
};

}  // namespace ubloop
