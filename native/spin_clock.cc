#include "spin_clock.h"

#include <ctime>
#include <mutex>

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

#if defined(__x86_64__)
// TSC ticks per microsecond, measured over 2 ms of sleep the first time a deadline is
// asked for; 0 if the TSC did not advance sensibly (then the monotonic clock is used).
double ticksPerUs() {
  static std::once_flag once;
  static double rate = 0;
  std::call_once(once, [] {
    const uint64_t t0 = monotonicNs();
    const uint64_t c0 = __rdtsc();
    timespec pause{0, 2'000'000};
    nanosleep(&pause, nullptr);
    const uint64_t t1 = monotonicNs();
    const uint64_t c1 = __rdtsc();
    if (t1 > t0 && c1 > c0) rate = double(c1 - c0) / (double(t1 - t0) / 1000.0);
  });
  return rate;
}
#endif

}  // namespace

uint64_t SpinClock::now() {
#if defined(__x86_64__)
  if (ticksPerUs() > 0) return __rdtsc();
#endif
  return monotonicNs();
}

uint32_t SpinClock::usSince(uint64_t stamp) {
  const uint64_t t = now();
  if (t <= stamp) return 0;
  double us = double(t - stamp) / 1000.0;
#if defined(__x86_64__)
  if (const double rate = ticksPerUs(); rate > 0) us = double(t - stamp) / rate;
#endif
  return us > 4e9 ? UINT32_MAX : uint32_t(us);
}

uint64_t SpinClock::deadlineAfterUs(uint32_t us) {
#if defined(__x86_64__)
  if (const double rate = ticksPerUs(); rate > 0) return __rdtsc() + uint64_t(double(us) * rate);
#endif
  return monotonicNs() + uint64_t(us) * 1000u;
}

}  // namespace ubloop
