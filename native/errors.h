// One way to report a failed system call: an errno value plus the operation that
// failed. Native code passes SysError around; the addon turns it into a JS Error with
// `code` ('EBUSY'), `errno` (the positive number) and `syscall` (the operation).
#pragma once

#include <string>

namespace ubloop {

struct SysError {
  int err = 0;            // positive errno
  std::string op;         // e.g. "ADD_DEV", "open /dev/ublkc3"
  std::string detail;     // optional human detail

  static SysError from(int err, std::string op, std::string detail = {}) {
    return SysError{err < 0 ? -err : err, std::move(op), std::move(detail)};
  }
};

// 'EBUSY' for 16, ..., or "E<number>" when the name is unknown.
const char *errnoName(int err);

// A one-line message: "ADD_DEV failed: Device or resource busy (EBUSY)".
std::string describe(const SysError &e);

}  // namespace ubloop
