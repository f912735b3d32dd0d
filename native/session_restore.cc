// The end of a session: the thread's own registers back (re-issuing a call our stop turned
// into EINTR, restarting one the kernel would restart), its signal mask back, the detach.
#include "session.h"

#include <errno.h>
#include <sys/ptrace.h>

namespace lockmem {
namespace detail {

// The registers to put back: the saved ones, or the saved ones re-issuing a call that
// returned EINTR only because we stopped the thread.
arch::Regs Session::finalRegisters() {
  procfs::SignalState st = readSignalState();
  if (eintrOnlyFromOurStop(spec_.pid, saved_, st, blockedSignals(st))) {
    out_->rearmed = true;
    return arch::rearmSyscall(saved_);
  }
  return saved_;
}

// True when `sig`, about to be delivered, interrupts a blocking call by itself (caught,
// or a stop signal).
bool Session::signalInterrupts(int sig) {
  procfs::SignalState st = readSignalState();
  return !st.known || (sigbit(sig) & (st.caught | kStopSignals)) != 0;
}

// Saved/Blocked -> Restored -> Detached: puts the thread's registers back (re-issuing an
// EINTR'd call if we caused it) and detaches, from whichever stop the thread is in. Before
// Saved nothing of the thread changed: only the detach.
bool Session::restoreAndDetach() {
  if (!registersSaved()) return detach();
  if (where_ == Where::SyscallEntry && !leaveSyscallEntry()) return false;
  arch::Regs final = finalRegisters();
  bool needsKernelRestart =
      where_ == Where::SyscallExit && arch::currentSyscall(final) >= 0 && isRestartCode(arch::returnValue(final));
  // From a syscall-exit stop the kernel applies its restart rules (ERESTART*) only if it
  // passes through the signal path. With no caught signal pending, the rule is known: the
  // call again (or restart_syscall); apply it here. Going back to the signal path instead
  // means resuming this thread inside the group stop, and on Linux 6.18 that made another
  // thread, re-armed out of epoll_wait, fail with EINTR once in ~80 sessions (a minimal
  // ptrace program shows it: 6-8 EINTR in 500 rounds, 0 with the rule applied here).
  if (needsKernelRestart && !caughtSignalPending()) {
    final = arch::restartSyscall(final);
    needsKernelRestart = false;
  } else if (where_ == Where::SyscallExit && !needsKernelRestart && !undoRestartFixup(&final, &needsKernelRestart)) {
    return false;
  }
  if (!setRegs(final, Stage::Restore)) return false;
  if (!restoreSignalMask()) return false;
  phase_ = Phase::Restored;
  if (needsKernelRestart) {
    // A handled signal may turn the restart into EINTR (SA_RESTART or not): the kernel
    // decides, on the thread's own registers.
    if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return failErrno(Stage::Restore, "PTRACE_INTERRUPT");
    if (!resume(PTRACE_CONT, 0, Stage::Restore)) return false;
    if (!waitForSignalPathStop(Stage::Restore)) return false;
  }
  return detach();
}

// arm64 (native/arch/aarch64.cc): the registers saved at our stop show the thread's call
// already rewound for a restart, as if no handler would run. With a caught signal pending
// one will: hand the kernel the state from before that fixup, so that its signal path
// decides EINTR or restart as it would have without us. Its fixup takes x0 from orig_x0,
// the x0 of the thread's last svc: one more call of ours first, with the call's first
// argument in x0 and nothing done (mlock2 with a flag it rejects: EINVAL before it looks
// at the range).
bool Session::undoRestartFixup(arch::Regs* final, bool* viaSignalPath) {
  arch::Regs before;
  uint64_t firstArg = 0;
  if (!arch::beforeRestartFixup(tid_, *final, &before, &firstArg) || !caughtSignalPending()) return true;
  constexpr uint64_t kNotAnMlockFlag = 2;  // MLOCK_ONFAULT is 1
  Syscall setOrigX0{arch::nrMlock2(), {firstArg, 0, kNotAnMlockFlag, 0, 0, 0}};
  // Under a seccomp filter that would not allow it, leave the restart as it is.
  if (!spec_.suspendSeccomp && !seccompAllowsCall(setOrigX0)) return true;
  SyscallOutcome res;
  if (!runCall(setOrigX0, &res)) return false;
  if (res.err != EINVAL) return true;  // not the call we know: keep the rewound registers
  *final = before;
  *viaSignalPath = true;
  return true;
}

// A signal the thread catches is pending (and not blocked by its own mask).
bool Session::caughtSignalPending() {
  procfs::SignalState st = readSignalState();
  return !st.known || (st.pending & ~blockedSignals(st) & st.caught) != 0;
}

bool Session::detach() {
  // Checked while we still hold the thread: once detached it may dequeue a pending
  // foreign SIGSTOP itself, and then nothing would show it any more. The same read
  // counts the signals our mask kept pending (one /proc read per session, not two).
  bool checkForeign = spec_.stopProcess && (facts_.ownStopSeen || facts_.groupStopped);
  // Our mask was on the thread (Blocked, now Restored): count what it kept pending.
  bool signalsWereBlocked = ownMask_.has_value();
  if (checkForeign || signalsWereBlocked) {
    procfs::SignalState st = readSignalState();
    if (checkForeign && st.known && (st.pending & kStopSignals) != 0) noteForeignStop();
    if (signalsWereBlocked && st.known) out_->signalsDeferred = __builtin_popcountll(st.pending & ~*ownMask_ & ~kStopSignals);
  }
  if (ptrace(PTRACE_DETACH, tid_, nullptr, nullptr) != 0) return failErrno(Stage::Detach, "PTRACE_DETACH");
  out_->pauseNs = pauseStart_ ? nowNs() - pauseStart_ : 0;
  bool restored = phase_ == Phase::Restored;
  phase_ = Phase::Detached;
  if (restored && journalOwned()) journal_.markRestored();
  return true;
}

// At the entry of one of our calls, registers put back now would make the kernel run
// the thread's own interrupted call again with its saved arguments. Cancel ours and go
// on to the exit stop first.
bool Session::leaveSyscallEntry() {
  arch::Regs regs;
  if (!arch::getRegs(tid_, &regs)) return failErrno(Stage::Restore, "PTRACE_GETREGS");
  if (!setRegs(arch::cancelSyscall(regs), Stage::Restore)) return false;
  if (!resume(PTRACE_SYSCALL, 0, Stage::Restore)) return false;
  Stop stop;
  if (!waitStop(&stop)) return false;
  if (stop.kind == StopKind::Exited) return failGone(Stage::Restore);
  where_ = Where::SyscallExit;
  return true;
}

}  // namespace detail
}  // namespace lockmem
