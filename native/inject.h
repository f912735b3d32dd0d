// Runs a batch of system calls inside another process through ptrace, leaving no trace:
// the thread's registers are restored exactly, signals that arrive meanwhile are
// delivered, and a call the thread was blocked in resumes as if nothing happened.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <string>
#include <vector>

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
  std::string journalPath;
  // Evaluate the target's seccomp filters for every call first; refuse any call they
  // would not allow.
  bool checkSeccomp = false;
  // PTRACE_O_SUSPEND_SECCOMP: the filters do not apply to our calls (explicit opt-in).
  bool suspendSeccomp = false;
  // Recovery of an interrupted session: put these registers back (raw register block
  // from a journal) instead of the thread's current ones, and use this wasStopped.
  // Calls that return EINTR after a stop (signal(7)): with stopProcess, other threads
  // blocked in one are re-issued before the process is continued.
  std::vector<long> eintrSyscalls;
  // Recovery of a run that died before or after the thread's registers were changed:
  // no injection, only re-issue the calls our stop interrupted (every thread) and
  // continue the process (unless someone else stopped it).
  bool continueOnly = false;
  bool haveRestoreRegs = false;
  std::string restoreRegs;
  bool recoveredWasStopped = false;
  // Recovery: the thread's own signal mask, journaled by a run that blocked its signals.
  bool haveRestoreSigmask = false;
  uint64_t restoreSigmask = 0;
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

// Where it failed and why. `stage` is one of attach, interrupt, getregs, inject,
// restore, detach, arch.
struct InjectError {
  int err = 0;
  std::string stage;
  std::string message;
};

// Returns false and fills `error` when the batch could not be run (the target is then
// left exactly as it was, or it has exited on its own). A call that fails inside the
// target is not an InjectError: it is reported in its SyscallOutcome.
bool runBatch(const BatchSpec& spec, BatchOutcome* outcome, InjectError* error);

}  // namespace lockmem
