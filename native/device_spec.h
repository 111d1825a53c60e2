// What a device is asked to be: filled from the JS options (already validated in
// TypeScript, re-checked cheaply in native code) and shared read-only by the queues.
#pragma once

#include <cstdint>
#include <string>

namespace ubloop {

enum class TargetKind { Loop, Null };

// How a request's data moves between the kernel's request pages and the backing I/O.
//   KernelCopy  the kernel copies into / out of a buffer of ours per tag (every kernel)
//   UserCopy    we copy with read/write on /dev/ublkcN at an offset naming queue and
//               tag (UBLK_F_USER_COPY)
//   ZeroCopy    we register the request's pages in the ring's buffer table with
//               REGISTER_IO_BUF and do fixed-buffer I/O on them (UBLK_F_SUPPORT_ZERO_COPY)
//   AutoBufReg  the kernel registers them before handing the request over and
//               unregisters them at commit (UBLK_F_AUTO_BUF_REG): no extra commands
// Auto (asked for only) picks the fastest the kernel offers and the caller may use.
enum class DataPath { Auto, KernelCopy, UserCopy, ZeroCopy, AutoBufReg };

// Names shared with the TypeScript side: 'auto' | 'kernel' | 'user' | 'zero' | 'auto-buf'.
inline const char *dataPathName(DataPath p) {
  switch (p) {
    case DataPath::Auto: return "auto";
    case DataPath::KernelCopy: return "kernel";
    case DataPath::UserCopy: return "user";
    case DataPath::ZeroCopy: return "zero";
    case DataPath::AutoBufReg: return "auto-buf";
  }
  return "?";
}

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
  DataPath copy = DataPath::Auto;            // asked for
  DataPath dataPath = DataPath::KernelCopy;  // in use (set by the Device before ADD_DEV)
};

}  // namespace ubloop
