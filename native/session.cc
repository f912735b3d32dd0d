// The main sequence of a session (the design: the top of inject.cc; the phases: session.h),
// what happens after it whatever the outcome, and the error path that lets the thread go.
#include "session.h"

#include <signal.h>
#include <sys/ptrace.h>

#include "fault.h"

namespace lockmem {
namespace detail {

namespace {

// Kernel-internal return codes that ask for a restart (include/linux/errno.h).
constexpr int64_t kERestartSys = -512;
constexpr int64_t kERestartNoIntr = -513;
constexpr int64_t kERestartNoHand = -514;
constexpr int64_t kERestartRestartBlock = -516;

}  // namespace

bool isStopSignal(int sig) {
  return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

bool isRestartCode(int64_t v) {
  return v == kERestartSys || v == kERestartNoIntr || v == kERestartNoHand ||
         v == kERestartRestartBlock;
}

Session::Session(const BatchSpec& spec, const Recovery* recovery, BatchOutcome* out, InjectError* error)
    : spec_(spec),
      recovery_(recovery),
      out_(out),
      error_(error),
      tid_(spec.tid),
      journal_(spec.journalPath),
      others_(spec.pid, spec.tid, spec.eintrSyscalls, [this](const siginfo_t& info) { classifyStop(info); }) {}

bool Session::run() {
  // What an earlier session on this thread saw blocked is no evidence for this one; what
  // the run being recovered saw before its stop is.
  arch::forgetBlockedCalls();
  if (recovery_) arch::seedBlockedCalls(recovery_->blockedCalls);
  bool ok = hold() && inject();
  if (ok) {
    faultPoint("before-restore");
    ok = restoreAndDetach();
    if (ok) faultPoint("detached");
  }
  release();
  return ok;
}

// Start -> Journaled -> Seized -> Held -> Saved (-> Blocked): the thread held (in our
// group stop, with stopProcess), its registers saved and journaled, its signals blocked.
// On failure the thread has already been let go (cleanup()).
bool Session::hold() {
  bool stoppedNow = processState() == 'T';
  facts_.wasStopped = recovery_ ? recovery_->stayStopped : stoppedNow;
  out_->wasStopped = facts_.wasStopped;
  if (!recovery_ && !journal_.begin(spec_.pid, tid_, facts_.wasStopped)) {
    return failErrno(Stage::Journal, "writing the crash journal");
  }
  phase_ = Phase::Journaled;
  faultPoint("journal-begin");
  // The pause the target feels starts when we ask it to stop, not when we see it stopped.
  pauseStart_ = nowNs();
  if (!attach()) return false;
  // Before the stop hides it (arm64: the call and its first argument; native/arch/aarch64.cc).
  arch::rememberBlockedCall(spec_.pid, tid_);
  faultPoint("seized");
  // Before the stop wakes them: the threads whose call it would turn into EINTR.
  if (spec_.stopProcess && !stoppedNow) others_.seizeWaiters();
  // And before the stop hides them (arm64), for a later run if we die: the calls seen blocked.
  if (!recovery_ && !journal_.saveBlockedCalls(arch::rememberedCalls())) {
    return cleanup(failErrno(Stage::Journal, "journaling the blocked calls"));
  }
  if (spec_.stopProcess && !stoppedNow && !ownStop_.send(spec_.pid)) return cleanup(failErrno(Stage::Interrupt, "SIGSTOP"));
  faultPoint("sigstop-sent");
  // Only now interrupt the thread (which makes a blocking call return): from here on a
  // death of ours leaves the process stopped, where recovery can re-issue that call.
  if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return cleanup(failErrno(Stage::Interrupt, "PTRACE_INTERRUPT"));
  if (!waitForHold()) return cleanup();
  phase_ = Phase::Held;
  faultPoint("stopped");
  if (recovery_) {
    if (!useJournaledRegisters()) return cleanup();
  } else {
    if (!saveRegisters()) return cleanup();
    if (!journal_.saveRegs(saved_)) return cleanup(failErrno(Stage::Journal, "journaling the registers"));
  }
  if (!deferSignals()) return cleanup();
  faultPoint("regs-journaled");
  // Tests: a signal that arrives while the thread is held (LOCKMEM_TEST_SIGNAL_AT=held:...).
  signalPoint("held", spec_.pid, [] { return true; });
  return true;
}

// Runs the batch, and after a failed call the undo calls of those before it. On failure
// the thread has already been let go (cleanup()).
bool Session::inject() {
  if (!findSyscallInstruction()) return cleanup();
  if (spec_.checkSeccomp && !spec_.suspendSeccomp && !checkSeccomp()) return cleanup();

  bool ok = true;
  for (size_t i = 0; i < spec_.ops.size(); i++) {
    SyscallOutcome res;
    if (!runCall(spec_.ops[i].call, &res)) {
      ok = false;
      break;
    }
    out_->results.push_back(res);
    if (res.err != 0 && spec_.stopOnError) {
      ok = undoBefore(i);
      break;
    }
  }
  if (!ok) return cleanup();
  return true;
}

// Whatever happened, once the thread is let go: SIGCONT the process if we are the reason
// it is stopped, unless someone else asked for a stop meanwhile; drop the journal once the
// target is safe.
void Session::release() {
  bool safe = !attached();
  if (spec_.stopProcess && !facts_.wasStopped && safe) {
    bool ourStopConsumed = !ownStop_.sent() || facts_.ownStopSeen || facts_.groupStopped;
    // Every thread our stop may have woken: re-issue the calls it turned into EINTR.
    out_->otherThreadsRearmed += others_.rearmAll();
    // Every thread we detached is woken to go back into the group stop. A SIGCONT that
    // lands before it got there can leave it with TIF_SIGPENDING on its way back to the
    // re-armed call, which then fails with EINTR (Linux 6.18: 6-11 in 500 rounds of a
    // minimal ptrace program, 0 in 1,500 once it waits for them to be stopped again).
    waitUntilAllStopped(spec_.pid);
    // A SIGSTOP already pending when we sent ours absorbed it: the stop is someone else's.
    if (ownStop_.pendingBefore() && !recovery_) facts_.foreignStop = true;
    faultPoint("before-cont");
    // Once our SIGSTOP was consumed, a pending stop signal is someone else's, and
    // SIGCONT would discard it. Before that, a pending one may be ours. A SIGSTOP of
    // someone else's that our thread took in passing keeps the process stopped too.
    if (!facts_.foreignStop && (!ourStopConsumed || !foreignStopPending())) kill(spec_.pid, SIGCONT);
    // The target is held until it is continued: count that in the pause.
    if (pauseStart_) out_->pauseNs = nowNs() - pauseStart_;
  } else {
    others_.releaseAll();
  }
  if (journalOwned()) {
    if (safe) {
      journal_.remove();
      out_->journalRemoved = true;
    }
  } else {
    out_->journalRemoved = true;
  }
}

// Error path: put the thread back as it was and let it go; the first error is the one
// reported. Returns false so callers can `return cleanup();`.
bool Session::cleanup() {
  if (!attached()) return false;
  if (where_ == Where::Running) {
    // Only reachable when an interrupt or resume could not be completed; wait for the
    // thread to stop so it can be detached (it is never left traced).
    if (!waitForSignalPathStop(Stage::Interrupt)) return false;
  }
  restoreAndDetach();
  return false;
}

}  // namespace detail
}  // namespace lockmem
