// The 64-bit user_data of every SQE on a queue ring says what completed:
//
//   bits  0..15  tag      which ublk request slot (< UBLK_MAX_QUEUE_DEPTH)
//   bits 16..23  kind     Kind::Command (FETCH/COMMIT_AND_FETCH), Kind::Backing (a
//                         target's I/O), Kind::Transfer (a user-copy read or write
//                         on /dev/ublkcN), Kind::BufReg (REGISTER/UNREGISTER_IO_BUF),
//                         or Kind::Wake (the queue's wake-up eventfd read; tag 0)
//   bits 24..31  op       for Backing: the ublk op (UBLK_IO_OP_*) the backing I/O
//                         serves; for Transfer and BufReg, which of the two
//   bits 32..63  zero
//
// encode() is the only writer; tagOf/kindOf/opOf the only readers.
#pragma once

#include <cstdint>

#include "ublk_abi.h"

namespace ubloop::user_data {

enum class Kind : uint8_t { Command = 1, Backing = 2, Wake = 3, Transfer = 4, BufReg = 5 };

static_assert(UBLK_MAX_QUEUE_DEPTH <= (1u << 16), "a tag fits 16 bits");

constexpr uint64_t encode(Kind kind, uint16_t tag, uint8_t op = 0) {
  return uint64_t(tag) | (uint64_t(kind) << 16) | (uint64_t(op) << 24);
}
constexpr uint16_t tagOf(uint64_t ud) { return uint16_t(ud & 0xffff); }
constexpr Kind kindOf(uint64_t ud) { return Kind((ud >> 16) & 0xff); }
constexpr uint8_t opOf(uint64_t ud) { return uint8_t((ud >> 24) & 0xff); }

static_assert(tagOf(encode(Kind::Backing, 4095, UBLK_IO_OP_WRITE_ZEROES)) == 4095);
static_assert(kindOf(encode(Kind::Backing, 4095, UBLK_IO_OP_WRITE_ZEROES)) == Kind::Backing);
static_assert(opOf(encode(Kind::Backing, 4095, UBLK_IO_OP_WRITE_ZEROES)) == UBLK_IO_OP_WRITE_ZEROES);

}  // namespace ubloop::user_data
