// Runs a batch of system calls inside another process through ptrace, leaving no trace:
// the thread's registers are restored exactly, signals that arrive meanwhile are
// delivered, and a call the thread was blocked in resumes as if nothing happened.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <string>
#include <vector>

#include "procfs.h"
#include "stage.h"

namespace lockmem {

struct Syscall {
  long nr = -1;
  uint64_t args[6] = {0, 0, 0, 0, 0, 0};
};

struct BatchOp {
  Syscall call;
  bool hasUndo = false;
  Syscall undo;
};

struct SyscallOutcome {
  int64_t ret = 0;
  int err = 0;  // errno returned by the call, 0 on success
  uint64_t ns = 0;
};

struct BatchSpec {
  pid_t pid = 0;
  pid_t tid = 0;
  uint64_t vdsoStart = 0;
  uint64_t vdsoEnd = 0;
  std::vector<BatchOp> ops;
  bool stopOnError = true;
  // Crash safety: group-stop the whole process (SIGSTOP) for the session, so that if we
  // die it stays stopped instead of running on our registers; SIGCONT it afterwards
  // unless it was stopped before.
  bool stopProcess = false;
  // Where to journal (fsync) what a later run needs to put the target back; "" for none.
  // Recovering, the journal of the run that died.
  std::string journalPath;
  // Evaluate the target's seccomp filters for every call first; refuse any call they
  // would not allow.
  bool checkSeccomp = false;
  // PTRACE_O_SUSPEND_SECCOMP: the filters do not apply to our calls (explicit opt-in).
  bool suspendSeccomp = false;
  // Calls that return EINTR after a stop (signal(7)): with stopProcess, other threads
  // blocked in one are re-issued before the process is continued.
  std::vector<long> eintrSyscalls;
};

struct BatchOutcome {
  std::vector<SyscallOutcome> results;
  std::vector<SyscallOutcome> undoResults;
  uint64_t pauseNs = 0;
  bool rearmed = false;
  int signalsDelivered = 0;
  // Signals (distinct numbers) that arrived while the thread's signals were blocked for
  // the injection and were left pending, delivered once it runs again.
  int signalsDeferred = 0;
  bool wasStopped = false;
  // The whole process was held in a group stop by us (crash safety).
  bool groupStopped = false;
  // Other threads whose EINTR from our group stop was turned back into the call.
  int otherThreadsRearmed = 0;
  // Whether the journal was removed: false means a later run must recover this target.
  bool journalRemoved = false;
};

// What a run that died left in its journal (recoverSession()).
struct Recovery {
  // The raw register block it saved: put back instead of the thread's current registers.
  std::string regs;
  // Leave the process stopped afterwards: it was stopped before that run came, or someone
  // else stopped it meanwhile.
  bool stayStopped = false;
  // The thread's own signal mask, when that run blocked its signals.
  bool haveSigmask = false;
  uint64_t sigmask = 0;
  // The calls its threads were seen blocked in before its stop (the journal's calls= line).
  std::vector<procfs::ThreadCall> blockedCalls;
};

// Where it failed (stage.h) and why.
struct InjectError {
  bool failed = false;
  int err = 0;
  Stage stage = Stage::Attach;
  std::string message;
};

// Returns false and fills `error` when the batch could not be run (the target is then
// left exactly as it was, or it has exited on its own). A call that fails inside the
// target is not an InjectError: it is reported in its SyscallOutcome.
bool runBatch(const BatchSpec& spec, BatchOutcome* outcome, InjectError* error);

// Finishes a session whose run died while the thread may have held our registers: the
// same sequence as runBatch(), with the journaled registers (and mask) put back instead of
// the current ones. Same contract as runBatch().
bool recoverSession(const BatchSpec& spec, const Recovery& recovery, BatchOutcome* outcome, InjectError* error);

// Recovery of a run that died before or after the thread's registers were changed: no
// thread is held; the calls that run's SIGSTOP turned into EINTR are re-issued (every
// thread) and the process is continued. `blockedCalls`: what that run saw its threads
// blocked in before its stop (the journal's calls= line; arm64 needs it to re-issue).
// Returns how many calls were re-armed.
int undoStop(pid_t pid, const std::vector<long>& eintrSyscalls, const std::vector<procfs::ThreadCall>& blockedCalls);

}  // namespace lockmem
