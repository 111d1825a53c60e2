#include "errors.h"

#include <cerrno>
#include <cstring>
#include <string>

namespace ubloop {

const char *errnoName(int err) {
  // glibc 2.32+ knows every name.
  const char *name = strerrorname_np(err);
  return name ? name : "EUNKNOWN";
}

std::string describe(const SysError &e) {
  std::string msg = e.op + " failed: " + strerror(e.err) + " (" + errnoName(e.err) + ")";
  if (!e.detail.empty()) msg += ": " + e.detail;
  return msg;
}

}  // namespace ubloop
