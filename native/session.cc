// The main sequence of a session (the design: the top of inject.cc), what happens after it
// whatever the outcome, how errors are recorded, and the thread's state we save and put
// back: registers and signal mask.
#include "session.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <string>

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

Session::Session(const BatchSpec& spec, BatchOutcome* out, InjectError* error)
    : spec_(spec),
      out_(out),
      error_(error),
      tid_(spec.tid),
      journal_(spec.journalPath),
      others_(spec.pid, spec.continueOnly ? 0 : spec.tid, spec.eintrSyscalls,
              [this](const siginfo_t& info) { classifyStop(info); }) {}

bool Session::run() {
  bool ok = session();
  release();
  return ok;
}

bool Session::session() {
  // What an earlier session on this thread saw blocked is no evidence for this one.
  arch::forgetBlockedCalls();
  if (spec_.continueOnly) {
    // Every thread is a candidate: none of them is held by us.
    tid_ = 0;
    wasStopped_ = false;
    return true;
  }
  if (!hold()) return false;
  if (!inject()) return false;
  faultPoint("before-restore");
  if (!finish()) return false;
  faultPoint("detached");
  return true;
}

// From the crash journal to the thread held (in our group stop, with stopProcess), its
// registers saved and journaled, its signals blocked. On failure the thread has already
// been let go (cleanup()).
bool Session::hold() {
  bool stoppedNow = processState() == 'T';
  wasStopped_ = spec_.haveRestoreRegs ? spec_.recoveredWasStopped : stoppedNow;
  out_->wasStopped = wasStopped_;
  if (!spec_.haveRestoreRegs && !journal_.begin(spec_.pid, tid_, wasStopped_)) {
    return failErrno("journal", "writing the crash journal");
  }
  journalWritten_ = journal_.enabled();
  faultPoint("journal-begin");
  // The pause the target feels starts when we ask it to stop, not when we see it stopped.
  pauseStart_ = nowNs();
  if (!attach()) return false;
  // Before the stop hides it (arm64: the call and its first argument; native/arch/aarch64.cc).
  arch::rememberBlockedCall(spec_.pid, tid_);
  faultPoint("seized");
  if (spec_.stopProcess && !stoppedNow) {
    // Before the stop wakes them: the threads whose call it would turn into EINTR.
    others_.seizeWaiters();
    if (!ownStop_.send(spec_.pid)) return cleanup(failErrno("interrupt", "SIGSTOP"));
  }
  faultPoint("sigstop-sent");
  // Only now interrupt the thread (which makes a blocking call return): from here on a
  // death of ours leaves the process stopped, where recovery can re-issue that call.
  if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return cleanup(failErrno("interrupt", "PTRACE_INTERRUPT"));
  if (!waitForHold()) return cleanup();
  faultPoint("stopped");
  if (spec_.haveRestoreRegs) {
    if (!useJournaledRegisters()) return cleanup();
  } else {
    if (!saveRegisters()) return cleanup();
    if (!journal_.saveRegs(saved_)) return cleanup(failErrno("journal", "journaling the registers"));
  }
  if (!deferSignals()) return cleanup();
  faultPoint("regs-journaled");
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

// Whatever happened: SIGCONT the process if we are the reason it is stopped, unless
// someone else asked for a stop meanwhile; drop the journal once the target is safe.
void Session::release() {
  bool safe = where_ == Where::NotAttached || where_ == Where::Gone || !attached_;
  if (spec_.stopProcess && !wasStopped_ && safe) {
    bool ourStopConsumed = !ownStop_.sent() || ownStopSeen_ || groupStopped_;
    // Recovering: only a process that is actually stopped has calls to re-issue. The dead
    // run's SIGSTOP may still be taking effect: give the group stop a moment to complete.
    if (spec_.continueOnly) {
      // Only while its SIGSTOP is still pending or the group stop under way (a thread
      // already stopped): a run that died before sending one left a process that will
      // not stop, with nothing to wait for.
      uint64_t until = nowNs() + 200 * 1000000ull;
      while (processState() != 'T' && (stopPending() || anyThreadStopped()) && nowNs() < until) usleep(200);
    }
    // Every thread our stop may have woken: re-issue the calls it turned into EINTR.
    // Recovering, only a process that is actually stopped has such calls.
    bool stopped = processState() == 'T' || anyThreadStopped();
    if (!spec_.continueOnly || stopped) out_->otherThreadsRearmed += others_.rearmAll();
    // Every thread we detached is woken to go back into the group stop. A SIGCONT that
    // lands before it got there can leave it with TIF_SIGPENDING on its way back to the
    // re-armed call, which then fails with EINTR (Linux 6.18: 6-11 in 500 rounds of a
    // minimal ptrace program, 0 in 1,500 once it waits for them to be stopped again).
    if (!spec_.continueOnly || stopped) waitUntilAllStopped();
    // A SIGSTOP already pending when we sent ours absorbed it: the stop is someone else's.
    if (ownStop_.pendingBefore() && !spec_.haveRestoreRegs) foreignStop_ = true;
    faultPoint("before-cont");
    // Once our SIGSTOP was consumed, a pending stop signal is someone else's, and
    // SIGCONT would discard it. Before that, a pending one may be ours. A SIGSTOP of
    // someone else's that our thread took in passing keeps the process stopped too.
    // Recovering a dead run, a pending stop may be its SIGSTOP: continue regardless.
    if (spec_.continueOnly || (!foreignStop_ && (!ourStopConsumed || !foreignStopPending()))) kill(spec_.pid, SIGCONT);
    // The target is held until it is continued: count that in the pause.
    if (pauseStart_) out_->pauseNs = nowNs() - pauseStart_;
  } else {
    others_.releaseAll();
  }
  if (journalWritten_ || spec_.haveRestoreRegs) {
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
  if (where_ == Where::NotAttached || where_ == Where::Gone) return false;
  if (where_ == Where::Running) {
    // Only reachable when an interrupt or resume could not be completed; wait for the
    // thread to stop so it can be detached (it is never left traced).
    if (!waitForSignalPathStop("interrupt")) return false;
  }
  restoreAndDetach();
  return false;
}

bool Session::fail(const char* stage, int err, const std::string& message) {
  if (error_->stage.empty()) {
    error_->stage = stage;
    error_->err = err;
    error_->message = message;
  }
  return false;
}

bool Session::failErrno(const char* stage, const char* what) {
  int err = errno;
  if (err == ESRCH) return failGone(stage);
  std::ostringstream msg;
  msg << what << " on thread " << tid_ << " of process " << spec_.pid << ": " << strerror(err);
  return fail(stage, err, msg.str());
}

bool Session::failGone(const char* stage) {
  where_ = Where::Gone;
  std::ostringstream msg;
  msg << "process " << spec_.pid << " (thread " << tid_ << ") exited while lockmem held it";
  return fail(stage, ESRCH, msg.str());
}

bool Session::attach() {
  long options = PTRACE_O_TRACESYSGOOD | (spec_.suspendSeccomp ? PTRACE_O_SUSPEND_SECCOMP : 0);
  if (ptrace(PTRACE_SEIZE, tid_, nullptr, reinterpret_cast<void*>(options)) != 0) {
    return failErrno("attach", "PTRACE_SEIZE");
  }
  attached_ = true;
  where_ = Where::Running;
  return true;
}

bool Session::useJournaledRegisters() {
  arch::Regs current;
  if (!arch::getRegs(tid_, &current)) return failErrno("getregs", "PTRACE_GETREGS");
  if (spec_.restoreRegs.size() != sizeof(arch::Regs)) {
    return fail("journal", EINVAL, "the journaled register block does not match this architecture");
  }
  memcpy(&saved_, spec_.restoreRegs.data(), sizeof(saved_));
  haveSaved_ = true;
  // The thread may be anywhere in an injected state: treat it as changed.
  return true;
}

bool Session::setRegs(const arch::Regs& regs, const char* stage) {
  if (!arch::setRegs(tid_, regs)) return failErrno(stage, "PTRACE_SETREGS");
  return true;
}

bool Session::saveRegisters() {
  if (!arch::getRegs(tid_, &saved_)) return failErrno("getregs", "PTRACE_GETREGS");
  haveSaved_ = true;
  if (!arch::isNativeAbi(saved_)) {
    std::ostringstream msg;
    msg << "thread " << tid_ << " of process " << spec_.pid << " runs a 32-bit (compat) ABI; only "
        << arch::name() << " targets are supported";
    return fail("arch", ENOEXEC, msg.str());
  }
  return true;
}

// Blocks every signal of the thread for the injection (see the top of inject.cc); the
// thread's own mask goes into the journal first, so that a later run can put it back.
bool Session::deferSignals() {
  // Without a journal nothing could put the mask back after a crash. Before Linux 5.2,
  // PTRACE_GETSIGMASK read a temporary mask instead of the real one.
  if (!journal_.enabled() || (arch::inTemporarySigmask(saved_) && !kernelAtLeast(5, 2))) return true;
  uint64_t current = 0;
  if (ptrace(PTRACE_GETSIGMASK, tid_, sizeof(current), &current) != 0) return failErrno("getregs", "PTRACE_GETSIGMASK");
  // Recovering a run that blocked them: what we read now is its mask, not the thread's.
  uint64_t own = spec_.haveRestoreSigmask ? spec_.restoreSigmask : current;
  if (!journal_.saveSigmask(own)) {
    if (errno == ENOTSUP) return true;  // an older run's journal: signals stay deliverable
    return failErrno("journal", "journaling the signal mask");
  }
  uint64_t all = ~0ull;  // the kernel leaves SIGKILL and SIGSTOP out
  if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof(all), &all) != 0) return failErrno("inject", "PTRACE_SETSIGMASK");
  ownMask_ = own;
  signalsBlocked_ = true;
  return true;
}

bool Session::kernelAtLeast(int major, int minor) {
  utsname u;
  int ma = 0, mi = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

// Before the thread may run its own code again.
bool Session::restoreSignalMask() {
  if (!signalsBlocked_) return true;
  if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof(ownMask_), &ownMask_) != 0) return failErrno("restore", "PTRACE_SETSIGMASK");
  signalsBlocked_ = false;
  signalsWereBlocked_ = true;
  return true;
}

}  // namespace detail
}  // namespace lockmem
