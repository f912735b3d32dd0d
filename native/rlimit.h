#pragma once

#include <sys/types.h>
#include <cstdint>

namespace lockmem {

struct MemlockLimit {
  uint64_t soft = 0;
  uint64_t hard = 0;
};

// Sets RLIMIT_MEMLOCK of another process (prlimit(2)) and returns the previous value in
// `old`; false with errno set on failure.
bool setMemlockLimit(pid_t pid, const MemlockLimit& limit, MemlockLimit* old);

}  // namespace lockmem
