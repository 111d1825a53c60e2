#include "spin_clock.h"

#include <ctime>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace ubloop {
uint64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

namespace {

// Where ticks come from and how many make a microsecond.
struct Source {
  bool tsc = false;
  double ticksPerUs = 1000.0;  // nanoseconds of CLOCK_MONOTONIC
};

// One reading of CLOCK_MONOTONIC and the TSC ticks around it: `spread` is how many
// ticks the read took, which is large when the thread was preempted in between.
struct Pair {
  uint64_t ns, tsc, spread;
};

#if defined(__x86_64__)
Pair readPair() {
  const uint64_t before = __rdtsc();
  const uint64_t ns = monotonicNs();
  const uint64_t after = __rdtsc();
  return {ns, before + (after - before) / 2, after - before};
}

// The tightest of a few readings, so that one preemption (common for a vCPU under
// emulation) does not skew the rate for the life of the process.
Pair tightPair() {
  Pair best = readPair();
  for (int i = 0; i < 8; i++) {
    const Pair p = readPair();
    if (p.spread < best.spread) best = p;
  }
  return best;
}
#endif

// Measured over 5 ms of sleep the first time it is asked for (a thread-safe static).
const Source &source() {
  static const Source s = [] {
    Source out;
#if defined(__x86_64__)
    const Pair a = tightPair();
    timespec pause{0, 5'000'000};
    nanosleep(&pause, nullptr);
    const Pair b = tightPair();
    if (b.ns > a.ns && b.tsc > a.tsc) out = {true, double(b.tsc - a.tsc) / (double(b.ns - a.ns) / 1000.0)};
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
