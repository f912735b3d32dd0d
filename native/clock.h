// Small facts shared by the session and the waiter code: a monotonic clock and the stop
// signals as a mask (bit sig-1, as /proc and PTRACE_GETSIGMASK show masks).
#pragma once

#include <signal.h>
#include <time.h>

#include <cstdint>

namespace lockmem {

inline uint64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

constexpr uint64_t sigbit(int sig) { return 1ull << (sig - 1); }

// SIGSTOP and the terminal stop signals.
constexpr uint64_t kStopSignals = sigbit(SIGSTOP) | sigbit(SIGTSTP) | sigbit(SIGTTIN) | sigbit(SIGTTOU);

}  // namespace lockmem
