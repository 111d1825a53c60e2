// The null target completes every request at once without touching data: it measures
// the engine (kernel round trip + queue loop) with no backing I/O. Only READs in the
// copy-less data paths do one thing: fill their pages with zeros.
#include <cerrno>

#include "queue.h"
#include "target.h"

namespace ubloop {
namespace {

uint32_t bytesOf(const ublksrv_io_desc &d) { return d.nr_sectors << 9; }

void nullStart(Queue &q, uint16_t tag) {
  const ublksrv_io_desc &d = q.desc(tag);
  const uint8_t op = ublksrv_get_op(&d);
  // A READ whose data the kernel does not copy from our buffer (the copy-less paths)
  // gets zeros: its pages would otherwise show what they held before.
  if (op == UBLK_IO_OP_READ && q.requestPagesAreBuffer() && !q.zeroFill(tag, 0, bytesOf(d))) return;
  // READ/WRITE report their bytes (at most maxIoBytes); the other ops complete with
  // 0, as a discard of up to 4 GiB does not fit the 32-bit result.
  const bool data = op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE;
  q.commit(tag, data ? static_cast<int>(bytesOf(d)) : 0);
}

// Only the zero fill of a READ comes back here.
void nullBackingDone(Queue &q, uint16_t tag, uint8_t, int res) {
  const uint32_t len = bytesOf(q.desc(tag));
  IoSlot &slot = q.slot(tag);
  if (res <= 0) {
    q.commit(tag, res < 0 ? res : -EIO);
    return;
  }
  slot.done += unsigned(res);
  if (slot.done < len && !q.zeroFill(tag, slot.done, len - slot.done)) return;
  q.commit(tag, int(len));
}

}  // namespace

const Target kNullTarget = {nullStart, nullBackingDone};

}  // namespace ubloop
