// The guardian's stand-in (src/guardian.ts): a child forked from this process that costs
// no Node.js start while nothing goes wrong. It holds the read end of a pipe whose write end
// only this process has, and sleeps in read(). This process writes "D" before it exits with
// no session of its own left: the stub then exits. Any other end of the pipe (EOF: this
// process died, by SIGKILL, the OOM killer, a torn-down session) makes the stub execute the
// real guardian, which recovers what was left.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace lockmem {

struct GuardianStub {
  pid_t pid = -1;
  // The write end: O_CLOEXEC, kept open for this process's lifetime.
  int writeFd = -1;
};

// `argv` (argv[0] first) and `env` ("K=V") of the guardian that the stub executes; the
// program is this process's own executable (an inode opened now: it stays valid after this
// process is gone). False with errno set.
bool startGuardianStub(const std::vector<std::string>& argv, const std::vector<std::string>& env, GuardianStub* out);

}  // namespace lockmem
