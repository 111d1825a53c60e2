// The null target completes every request at once without touching data: it measures
// the engine (kernel round trip + queue loop) with no backing I/O.
#include "queue.h"
#include "target.h"

namespace ubloop {
namespace {

void nullStart(Queue &q, uint16_t tag) {
  const ublksrv_io_desc &d = q.desc(tag);
  q.commit(tag, static_cast<int>(d.nr_sectors << 9));
}

void nullBackingDone(Queue &, uint16_t, uint8_t, int) {}

}  // namespace

const Target kNullTarget = {"null", nullStart, nullBackingDone};

}  // namespace ubloop
