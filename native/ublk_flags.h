// The one table of UBLK_F_* feature flags by name and bit, as Linux 7.3's
// <linux/ublk_cmd.h> defines them. The addon exports it (ublkFlags); everything that
// names a flag (features, serve --json, the TypeScript types' tests) reads it there.
// A bit the kernel reports that is not listed here is shown as "bit N".
#pragma once

#include <cstdint>

#include "ublk_abi.h"

namespace ubloop::flags {

struct Flag {
  const char *name;
  unsigned bit;
};

inline constexpr Flag kTable[] = {
    {"UBLK_F_SUPPORT_ZERO_COPY", 0},      {"UBLK_F_URING_CMD_COMP_IN_TASK", 1},
    {"UBLK_F_NEED_GET_DATA", 2},          {"UBLK_F_USER_RECOVERY", 3},
    {"UBLK_F_USER_RECOVERY_REISSUE", 4},  {"UBLK_F_UNPRIVILEGED_DEV", 5},
    {"UBLK_F_CMD_IOCTL_ENCODE", 6},       {"UBLK_F_USER_COPY", 7},
    {"UBLK_F_ZONED", 8},                  {"UBLK_F_USER_RECOVERY_FAIL_IO", 9},
    {"UBLK_F_UPDATE_SIZE", 10},           {"UBLK_F_AUTO_BUF_REG", 11},
    {"UBLK_F_QUIESCE", 12},               {"UBLK_F_PER_IO_DAEMON", 13},
    {"UBLK_F_BUF_REG_OFF_DAEMON", 14},    {"UBLK_F_BATCH_IO", 15},
    {"UBLK_F_INTEGRITY", 16},             {"UBLK_F_SAFE_STOP_DEV", 17},
    {"UBLK_F_NO_AUTO_PART_SCAN", 18},     {"UBLK_F_SHMEM_ZC", 19},
    {"UBLK_F_IO_DESC_SIZE", 20},
};

// The bits the engine itself tests must agree with the table.
static_assert(UBLK_F_SUPPORT_ZERO_COPY == 1ULL << 0 && UBLK_F_URING_CMD_COMP_IN_TASK == 1ULL << 1);
static_assert(UBLK_F_USER_RECOVERY == 1ULL << 3 && UBLK_F_UNPRIVILEGED_DEV == 1ULL << 5);
static_assert(UBLK_F_CMD_IOCTL_ENCODE == 1ULL << 6 && UBLK_F_USER_COPY == 1ULL << 7);
static_assert(UBLK_F_UPDATE_SIZE == 1ULL << 10 && UBLK_F_QUIESCE == 1ULL << 12);

}  // namespace ubloop::flags
