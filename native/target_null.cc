// The null target completes every request at once without touching data: it measures
// the engine (kernel round trip + queue loop) with no backing I/O.
#include "queue.h"
#include "target.h"

namespace ubloop {
namespace {

void nullStart(Queue &q, uint16_t tag) {
  const ublksrv_io_desc &d = q.desc(tag);
  const uint8_t op = ublksrv_get_op(&d);
  // READ/WRITE report their bytes (at most maxIoBytes); the other ops complete with
  // 0, as a discard of up to 4 GiB does not fit the 32-bit result.
  const bool data = op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE;
  q.commit(tag, data ? static_cast<int>(uint64_t(d.nr_sectors) << 9) : 0);
}

void nullBackingDone(Queue &, uint16_t, uint8_t, int) {}

}  // namespace

const Target kNullTarget = {"null", nullStart, nullBackingDone};

}  // namespace ubloop
