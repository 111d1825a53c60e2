// The loop target: each ublk op becomes one SQE on the backing file, on the queue's
// own ring, into or out of whichever buffer the data path uses. Short reads and writes continue where they stopped; -EAGAIN/-EINTR are
// retried a bounded number of times (then the request fails with -EIO); a read that
// hits the end of the image reads zeros from there on.
#include <fcntl.h>
#include <linux/falloc.h>

#include <cerrno>

#include "queue.h"
#include "target.h"

namespace ubloop {
namespace {

// A pseudo op, beyond the ublk ops: WRITE_ZEROES retried as a hole punch.
constexpr uint8_t kWriteZeroesByPunch = 0x80;

// -EAGAIN/-EINTR from a backing I/O are retried, from the second retry on through
// io-wq (IOSQE_ASYNC), where the I/O may block. A descriptor that keeps answering
// EAGAIN (O_NONBLOCK on a filesystem without non-blocking I/O, which bind refuses)
// would otherwise spin the queue thread forever.
constexpr uint8_t kMaxRetries = 8;

uint64_t bytesOf(const ublksrv_io_desc &d) { return uint64_t(d.nr_sectors) << 9; }
uint64_t fileOffset(const Queue &q, const ublksrv_io_desc &d) { return q.spec().offset + (d.start_sector << 9); }

// Issues (or continues, from slot.done) the backing I/O for tag.
void issue(Queue &q, uint16_t tag, uint8_t op) {
  const ublksrv_io_desc &d = q.desc(tag);
  IoSlot &slot = q.slot(tag);
  const uint64_t len = bytesOf(d);
  const uint64_t off = fileOffset(q, d);
  io_uring_sqe *s = q.sqe();
  switch (op) {
    case UBLK_IO_OP_READ:
      q.prepRead(s, Queue::kBackingFile, tag, slot.done, uint32_t(len - slot.done), off + slot.done);
      break;
    case UBLK_IO_OP_WRITE:
      q.prepWrite(s, Queue::kBackingFile, tag, slot.done, uint32_t(len - slot.done), off + slot.done);
      if (d.op_flags & UBLK_IO_F_FUA) s->rw_flags = RWF_DSYNC;
      break;
    case UBLK_IO_OP_FLUSH:
      io_uring_prep_fsync(s, Queue::kBackingFile, IORING_FSYNC_DATASYNC);
      break;
    case UBLK_IO_OP_DISCARD:
      io_uring_prep_fallocate(s, Queue::kBackingFile, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
      break;
    case UBLK_IO_OP_WRITE_ZEROES:
      // As kernel loop does: zeroes that may be unmapped become a hole (no space
      // needed, however large); REQ_NOUNMAP asks for allocated zeroes.
      if (d.op_flags & UBLK_IO_F_NOUNMAP) {
        io_uring_prep_fallocate(s, Queue::kBackingFile, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
      } else {
        io_uring_prep_fallocate(s, Queue::kBackingFile, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
      }
      break;
    case kWriteZeroesByPunch:
      io_uring_prep_fallocate(s, Queue::kBackingFile, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
      break;
  }
  if (slot.retries > 1) s->flags |= IOSQE_ASYNC;
  q.issueBacking(s, tag, op);
}

void loopStart(Queue &q, uint16_t tag) {
  const ublksrv_io_desc &d = q.desc(tag);
  const uint8_t op = ublksrv_get_op(&d);
  switch (op) {
    case UBLK_IO_OP_READ:
    case UBLK_IO_OP_FLUSH:
      issue(q, tag, op);
      return;
    case UBLK_IO_OP_WRITE:
    case UBLK_IO_OP_DISCARD:
    case UBLK_IO_OP_WRITE_ZEROES:
      // The block layer only warns about writes to a read-only disk; refuse them here.
      if (q.spec().readOnly) {
        q.commit(tag, -EROFS);
        return;
      }
      issue(q, tag, op);
      return;
    default:
      q.commit(tag, -EOPNOTSUPP);
  }
}

void loopBackingDone(Queue &q, uint16_t tag, uint8_t op, int res) {
  const ublksrv_io_desc &d = q.desc(tag);
  IoSlot &slot = q.slot(tag);
  const uint64_t len = bytesOf(d);
  if (res == -EAGAIN || res == -EINTR) {
    if (++slot.retries <= kMaxRetries) {
      issue(q, tag, op);
      return;
    }
    res = -EIO;
  }
  switch (op) {
    case UBLK_IO_OP_READ:
    case UBLK_IO_OP_WRITE:
      if (res < 0) break;
      if (res == 0 && op == UBLK_IO_OP_READ) {
        // End of the image: the rest of the device reads as zeros (in the copy-less
        // paths by a read that completes here as this READ's progress).
        if (!q.zeroFill(tag, slot.done, uint32_t(len - slot.done))) return;
        res = int(len - slot.done);
      }
      if (res == 0) {
        res = -EIO;  // a write that makes no progress
        break;
      }
      slot.done += unsigned(res);
      if (slot.done < len) {
        issue(q, tag, op);
        return;
      }
      res = int(len);
      break;
    case UBLK_IO_OP_WRITE_ZEROES:
      // Filesystems without ZERO_RANGE (tmpfs) still punch holes, which read as zeros;
      // so does one without the space to allocate the range (the zeroes are what
      // matter, the allocation NOUNMAP asked for cannot be had anyway).
      if (res == -EOPNOTSUPP || res == -EINVAL || res == -ENOSPC) {
        issue(q, tag, kWriteZeroesByPunch);
        return;
      }
      [[fallthrough]];
    default:
      // FLUSH, DISCARD and WRITE_ZEROES complete with 0: the kernel ends them as a
      // whole on any non-negative result, and their length (up to 4 GiB) does not
      // fit the command's 32-bit result, where it would read as an error.
      if (res >= 0) res = 0;
  }
  q.commit(tag, res);
}

}  // namespace

const Target kLoopTarget = {loopStart, loopBackingDone};

const Target &targetFor(TargetKind kind) { return kind == TargetKind::Null ? kNullTarget : kLoopTarget; }

}  // namespace ubloop
