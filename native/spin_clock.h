// A clock for busy-poll deadlines and idle timing that is cheap to read everywhere.
//
// clock_gettime() is a vDSO call on most machines, but a system call on machines whose
// clocksource userspace cannot read (the HPET in many VMs), where every read exits to
// the hypervisor. The queue loop reads this clock around every wait, so on x86-64 it
// counts TSC ticks, converted with a rate measured once per process against
// CLOCK_MONOTONIC; elsewhere (or if the TSC does not advance) it is CLOCK_MONOTONIC.
#pragma once

#include <cstdint>

namespace ubloop {

// CLOCK_MONOTONIC in nanoseconds: for the rare timing that must be right even if the
// TSC rate was measured badly (the idle release after a 2 s wait).
uint64_t monotonicNs();

class SpinClock {
 public:
  // Measures the tick rate now (5 ms, once per process) rather than at first use.
  static void calibrate();
  // A time stamp, in ticks.
  static uint64_t now();
  // The microseconds elapsed since a time stamp.
  static uint32_t usSince(uint64_t stamp);
  // A deadline `us` microseconds from now, and whether it has passed.
  static uint64_t deadlineAfterUs(uint32_t us);
  static bool passed(uint64_t deadline) { return now() >= deadline; }
};

}  // namespace ubloop
