// A target is one small table of operations: what to do with a new ublk request, and
// what to do when one of the backing I/Os it issued on the queue ring completes.
#pragma once

#include <liburing.h>

#include <cstdint>

#include "device_spec.h"

namespace ubloop {

class Queue;

struct Target {
  // A new request arrived at tag; issue backing I/O via q.backingSqe() or q.commit().
  void (*start)(Queue &q, uint16_t tag);
  // A backing I/O for tag (serving ublk op `op`) completed with cqe result `res`.
  void (*backingDone)(Queue &q, uint16_t tag, uint8_t op, int res);
};

extern const Target kLoopTarget;
extern const Target kNullTarget;

const Target &targetFor(TargetKind kind);

}  // namespace ubloop
