#include "spin_clock.h"

#include <ctime>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace ubloop {
namespace {

uint64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// Where ticks come from and how many make a microsecond.
struct Source {
  bool tsc = false;
  double ticksPerUs = 1000.0;  // nanoseconds of CLOCK_MONOTONIC
};

// Measured over 2 ms of sleep the first time it is asked for (a thread-safe static).
const Source &source() {
  static const Source s = [] {
    Source out;
#if defined(__x86_64__)
    const uint64_t t0 = monotonicNs();
    const uint64_t c0 = __rdtsc();
    timespec pause{0, 2'000'000};
    nanosleep(&pause, nullptr);
    const uint64_t t1 = monotonicNs();
    const uint64_t c1 = __rdtsc();
    if (t1 > t0 && c1 > c0) out = {true, double(c1 - c0) / (double(t1 - t0) / 1000.0)};
#endif
    return out;
  }();
  return s;
}

}  // namespace

void SpinClock::calibrate() { source(); }

uint64_t SpinClock::now() {
#if defined(__x86_64__)
  if (source().tsc) return __rdtsc();
#endif
  return monotonicNs();
}

uint32_t SpinClock::usSince(uint64_t stamp) {
  const uint64_t t = now();
  if (t <= stamp) return 0;
  const double us = double(t - stamp) / source().ticksPerUs;
  return us > 4e9 ? UINT32_MAX : uint32_t(us);
}

uint64_t SpinClock::deadlineAfterUs(uint32_t us) { return now() + uint64_t(double(us) * source().ticksPerUs); }

}  // namespace ubloop
