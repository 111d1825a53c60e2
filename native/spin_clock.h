// A clock for busy-poll deadlines that is cheap to read everywhere.
//
// clock_gettime() is a vDSO call on most machines, but a system call on machines whose
// clocksource userspace cannot read (the HPET in many VMs), where every read exits to
// the hypervisor. Polling checks its deadline often, so on x86-64 it counts TSC ticks,
// converted with a rate measured once per process against CLOCK_MONOTONIC.
#pragma once

#include <cstdint>

namespace ubloop {

class SpinClock {
 public:
  // A deadline `us` microseconds from now.
  static uint64_t deadlineAfterUs(uint32_t us);
  static bool passed(uint64_t deadline) { return now() >= deadline; }
  // A time stamp, and the microseconds elapsed since one.
  static uint64_t now();
  static uint32_t usSince(uint64_t stamp);
};

}  // namespace ubloop
