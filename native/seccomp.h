// Reads a stopped tracee's seccomp filters (PTRACE_SECCOMP_GET_FILTER) and evaluates
// them the way the kernel would for a given call, so that lockmem never makes a target
// call something its filter denies or punishes.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <string>
#include <vector>

#include <linux/filter.h>

namespace lockmem {

struct SeccompFilters {
  std::vector<std::vector<sock_filter>> filters;  // most recent first, as the kernel runs them
};

// False with errno set when the filters cannot be read.
bool readSeccompFilters(pid_t tid, SeccompFilters* out);

// The action (SECCOMP_RET_* with data) the filters return for this call.
uint32_t evaluateSeccomp(const SeccompFilters& f, uint32_t arch, int nr, uint64_t ip, const uint64_t args[6]);

// True for SECCOMP_RET_ALLOW and SECCOMP_RET_LOG.
bool seccompAllows(uint32_t action);

// "KILL_PROCESS", "ERRNO(1)", ...
std::string seccompActionName(uint32_t action);

}  // namespace lockmem
