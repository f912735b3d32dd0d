// The injection state machine. Read DESIGN.md ("Kernel facts") first.
//
// One session: seize one thread, interrupt it, save its registers, then for each call
// point the pc at a `syscall` instruction in the target's [vdso], resume with
// PTRACE_SYSCALL to the entry stop and again to the exit stop, and read the result.
// Finally put the saved registers back and detach.
//
// Why PTRACE_SYSCALL and not single-stepping: a single-step trap is raised with
// force_sig(SIGTRAP), which resets the target's SIGTRAP handler to SIG_DFL if the target
// blocks or ignores SIGTRAP. Syscall stops raise no signal.
//
// Signals: while our registers are in the thread, its signals are blocked
// (PTRACE_SETSIGMASK, the thread's own mask journaled first), so that one arriving
// meanwhile stays pending and is delivered with the thread's own registers once they
// are back. Taken mid-injection instead, it would stop the thread at a signal-delivery
// stop with our registers in place, and if lockmem died right then the kernel would
// drop the signal (waitpid cleared the stop's exit code). Only SIGSTOP and SIGKILL get
// through a mask. A thread stopped on its way out of a call that installed a temporary
// mask (ppoll, epoll_pwait, ...) is fine too: since Linux 5.2 PTRACE_GETSIGMASK returns
// the real mask the kernel was about to restore, and PTRACE_SETSIGMASK cancels that
// restore. On older kernels such a thread keeps its mask, and a signal that arrives is
// reported as a signal-delivery stop before our call starts, and is delivered right there
// with the thread's own registers put back; then we interrupt the thread again.
//
// Restart: when the thread was stopped inside a call, the kernel decides whether to
// restart it (ERESTART* codes) only on the signal-handling path. If our last stop was a
// syscall-exit stop, we go back to that path (PTRACE_INTERRUPT) before detaching.
// Calls that return EINTR on any stop (epoll_wait and the others in signal(7)) are
// re-issued instead, unless a real signal is pending that would interrupt them anyway.
#include "inject.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "arch.h"
#include "fault.h"
#include "journal.h"
#include "procfs.h"
#include "seccomp.h"
#include "stopsig.h"
#include "waiters.h"

namespace lockmem {
namespace {

constexpr size_t kMaxVdsoBytes = 1 << 20;
// A thread that receives signals faster than we can run one call makes us give up
// (cleanly) instead of spinning for ever.
constexpr int kMaxSignalRetries = 1000;
// How long threads we detach may take to be back in the group stop before the SIGCONT.
constexpr uint64_t kRestopTimeoutNs = 2000 * 1000000ull;
// How long the process may take to enter our group stop before the session gives up.
constexpr uint64_t kHoldTimeoutNs = 2000 * 1000000ull;

// Kernel-internal return codes that ask for a restart (include/linux/errno.h).
constexpr int64_t kERestartSys = -512;
constexpr int64_t kERestartNoIntr = -513;
constexpr int64_t kERestartNoHand = -514;
constexpr int64_t kERestartRestartBlock = -516;

uint64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool isStopSignal(int sig) {
  return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

bool isRestartCode(int64_t v) {
  return v == kERestartSys || v == kERestartNoIntr || v == kERestartNoHand ||
         v == kERestartRestartBlock;
}

uint64_t sigbit(int sig) { return 1ull << (sig - 1); }

const uint64_t kStopSignals = sigbit(SIGSTOP) | sigbit(SIGTSTP) | sigbit(SIGTTIN) | sigbit(SIGTTOU);

// What waitpid reported.
enum class StopKind { Exited, SyscallStop, SignalDelivery, EventStop };

struct Stop {
  StopKind kind = StopKind::Exited;
  int sig = 0;
};

// Where the stopped thread is, which decides how it may be resumed and detached.
enum class Where {
  NotAttached,
  Running,       // seized (or resumed) and not yet stopped
  SignalPath,    // stopped inside get_signal(): interrupt, group stop, or signal delivery
  SyscallEntry,  // stopped at the entry of one of our calls
  SyscallExit,   // stopped at the exit of one of our calls
  Gone,          // the thread or process exited
};

class Session {
 public:
  Session(const BatchSpec& spec, BatchOutcome* out, InjectError* error)
      : spec_(spec),
        out_(out),
        error_(error),
        tid_(spec.tid),
        journal_(spec.journalPath),
        others_(spec.pid, spec.continueOnly ? 0 : spec.tid, spec.eintrSyscalls,
                [this](const siginfo_t& info) { classifyStop(info); }) {}

  bool run() {
    bool ok = session();
    release();
    return ok;
  }

 private:
  bool session() {
    if (spec_.continueOnly) {
      // Every thread is a candidate: none of them is held by us.
      tid_ = 0;
      wasStopped_ = false;
      return true;
    }
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
    faultPoint("before-restore");
    if (!finish()) return false;
    faultPoint("detached");
    return true;
  }

  char processState() { return procfs::state(spec_.pid); }

  // Stopped in the signal path. With stopProcess our SIGSTOP has been sent too, and the
  // group stop must be in effect before any register changes: if we die from then on, the
  // thread stops (DESIGN.md: "the tracer dies") instead of running on our registers.
  bool waitForHold() {
    if (!waitForSignalPathStop("interrupt")) return false;
    out_->groupStopped = spec_.stopProcess;
    if (!ownStop_.sent()) return true;
    // Take our SIGSTOP now, while the thread still has its own registers. Left pending, it
    // would be dequeued mid-injection: a signal-delivery stop with our registers in place,
    // and if lockmem died right then, the kernel would drop the signal (waitpid cleared the
    // stop's exit code) and the thread would run on our registers. Another thread may take
    // it instead (a seized waiter passes it on in others_.service()): then the group stop
    // reaches ours as an event stop.
    uint64_t until = nowNs() + kHoldTimeoutNs;
    // Test hook: someone's SIGCONT before the group stop is complete (it discards ours).
    signalPoint("hold-wait", spec_.pid, [this] { return !ownStopSeen_ && !groupStopped_; });
    // Every wait below ends: under the deadline, or for a stop that an interrupt queued
    // first makes certain. (A SIGCONT from someone else may have discarded our SIGSTOP:
    // then no other stop comes, and an unbounded wait once held this thread and the seized
    // waiters for ever.)
    while (!ownStopSeen_ && !groupStopped_) {
      if (!resume(PTRACE_CONT, 0, "interrupt")) return false;
      Stop stop;
      if (!waitStopFor(&stop, until)) {
        if (failed()) return false;
        if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return failErrno("interrupt", "PTRACE_INTERRUPT");
        if (!waitForSignalPathStop("interrupt")) return false;
        if (ownStopSeen_ || groupStopped_) break;
        return holdRefused();
      }
      if (stop.kind == StopKind::Exited) return failGone("interrupt");
      if (stop.kind == StopKind::EventStop) {
        if (isStopSignal(stop.sig)) groupStopped_ = true;
        continue;
      }
      if (stop.kind == StopKind::SignalDelivery) {
        // Handed on now (a signal left in a delivery stop is lost), with an interrupt
        // queued first: the thread stops again once the signal is delivered (a SIGSTOP:
        // in the group stop it starts, if no SIGCONT came first).
        bool ours = stop.sig == SIGSTOP;
        if (ours) classifyStop();
        else out_->signalsDelivered++;
        if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return failErrno("interrupt", "PTRACE_INTERRUPT");
        if (!resume(PTRACE_CONT, stop.sig, "interrupt")) return false;
        if (!waitForSignalPathStop("interrupt")) return false;
        if (ours && !groupStopped_) return holdRefused();
        continue;
      }
      // A syscall stop cannot come from PTRACE_CONT; keep the thread where it is.
    }
    return true;
  }

  // Someone's SIGCONT discarded our SIGSTOP, or the machine is too loaded for the thread
  // to run at all: never inject without the hold that makes a crash of ours harmless.
  bool holdRefused() {
    std::ostringstream msg;
    msg << "process " << spec_.pid << " did not enter the group stop lockmem asked for within "
        << kHoldTimeoutNs / 1000000 << " ms (a SIGCONT from someone else, or no CPU time for it)";
    return fail("interrupt", EAGAIN, msg.str());
  }

  // waitStop until an absolute deadline (polling, and passing on what the seized waiters
  // stop for meanwhile): false when nothing came in time.
  bool waitStopFor(Stop* stop, uint64_t until) {
    for (;;) {
      int status = 0;
      pid_t r = waitpid(tid_, &status, __WALL | WNOHANG);
      if (r == tid_) return classifyStatus(status, stop);
      if (r < 0 && errno != EINTR) return failErrno("wait", "waitpid") && false;
      others_.service();
      if (nowNs() > until) return false;
      // Sleep, not sched_yield: on a busy machine a spinning tracer takes the CPU the
      // target needs to reach the stop (a SCHED_IDLE target never got it).
      usleep(20);
    }
  }

  bool useJournaledRegisters() {
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

  // Blocks every signal of the thread for the injection (see the top of this file); the
  // thread's own mask goes into the journal first, so that a later run can put it back.
  bool deferSignals() {
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

  static bool kernelAtLeast(int major, int minor) {
    utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
    return ma > major || (ma == major && mi >= minor);
  }

  // Before the thread may run its own code again.
  bool restoreSignalMask() {
    if (!signalsBlocked_) return true;
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof(ownMask_), &ownMask_) != 0) return failErrno("restore", "PTRACE_SETSIGMASK");
    signalsBlocked_ = false;
    signalsWereBlocked_ = true;
    return true;
  }

  bool checkSeccomp() {
    SeccompFilters filters;
    if (!readSeccompFilters(tid_, &filters)) return failErrno("seccomp", "PTRACE_SECCOMP_GET_FILTER");
    auto check = [&](const Syscall& call) {
      uint32_t action = evaluateSeccomp(filters, arch::auditArch(), static_cast<int>(call.nr), insnAddr_, call.args);
      if (seccompAllows(action)) return true;
      // Named, not only numbered (issue 14: "syscall 325" sent people to a syscall table).
      const char* name = call.nr == arch::nrMlock2()       ? "mlock2"
                         : call.nr == arch::nrMunlock()    ? "munlock"
                         : call.nr == arch::nrMlockall()   ? "mlockall"
                         : call.nr == arch::nrMunlockall() ? "munlockall"
                                                           : nullptr;
      std::ostringstream msg;
      msg << "the seccomp filter of process " << spec_.pid << " answers syscall " << call.nr << " with "
          << seccompActionName(action);
      if (name) msg << ": it does not allow " << name;
      msg << "; lockmem did not make it call anything";
      return fail("seccomp", EPERM, msg.str());
    };
    for (const BatchOp& op : spec_.ops) {
      if (!check(op.call)) return false;
      if (op.hasUndo && !check(op.undo)) return false;
    }
    return true;
  }

  // Whatever happened: SIGCONT the process if we are the reason it is stopped, unless
  // someone else asked for a stop meanwhile; drop the journal once the target is safe.
  void release() {
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

  bool stopPending() {
    procfs::SignalState st = procfs::signalState(spec_.pid, spec_.pid);
    return st.known && (st.sharedPending & sigbit(SIGSTOP)) != 0;
  }

  bool anyThreadStopped() {
    for (pid_t t : procfs::threadIds(spec_.pid)) {
      char st = procfs::state(spec_.pid, t);
      if (st == 'T' || st == 't') return true;
    }
    return false;
  }

  // A thread just detached still reads 't' until it runs into the group stop ('T'): that
  // is not there yet (under CPU stress, 1 EINTR in ~10 runs of the container suite came
  // from counting it as stopped). A 't' that someone else traces is not ours to wait for.
  void waitUntilAllStopped() {
    uint64_t until = nowNs() + kRestopTimeoutNs;
    for (pid_t t : procfs::threadIds(spec_.pid)) {
      for (;;) {
        char st = procfs::state(spec_.pid, t);
        bool there = st == 'T' || st == 'D' || st == 'Z' || st == 'X' || st == '?' || (st == 't' && procfs::tracerPid(spec_.pid, t) != 0);
        if (there || nowNs() > until) break;
        usleep(10);
      }
    }
  }

  // A stop signal pending for the process now is someone else's: ours was consumed when
  // the group stopped, and SIGCONT would discard theirs.
  bool foreignStopPending() {
    procfs::SignalState st = readSignalState();
    return st.known && (st.pending & kStopSignals) != 0;
  }

  bool cleanup(bool) { return cleanup(); }

  // At a SIGSTOP signal-delivery stop of ours or of a seized waiter: our own stop (the
  // siginfo we sent, stopsig.h) or someone else's, whose stop must outlast our session.
  void classifyStop() {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    if (ptrace(PTRACE_GETSIGINFO, tid_, nullptr, &info) != 0) info.si_code = SI_KERNEL;
    classifyStop(info);
  }

  void classifyStop(const siginfo_t& info) {
    if (ownStop_.isOurs(info) && !ownStopSeen_) {
      ownStopSeen_ = true;
    } else {
      noteForeignStop();
    }
  }

  // Someone else wants the process stopped: so must a later run that finishes our session
  // if we die, which only the journal can tell (the signal itself is consumed).
  void noteForeignStop() {
    foreignStop_ = true;
    if (journalWritten_ || spec_.haveRestoreRegs) journal_.markForeignStop();
  }

  bool fail(const char* stage, int err, const std::string& message) {
    if (error_->stage.empty()) {
      error_->stage = stage;
      error_->err = err;
      error_->message = message;
    }
    return false;
  }

  bool failed() const { return !error_->stage.empty(); }

  bool failErrno(const char* stage, const char* what) {
    int err = errno;
    if (err == ESRCH) return failGone(stage);
    std::ostringstream msg;
    msg << what << " on thread " << tid_ << " of process " << spec_.pid << ": " << strerror(err);
    return fail(stage, err, msg.str());
  }

  bool failGone(const char* stage) {
    where_ = Where::Gone;
    std::ostringstream msg;
    msg << "process " << spec_.pid << " (thread " << tid_ << ") exited while lockmem held it";
    return fail(stage, ESRCH, msg.str());
  }

  bool attach() {
    long options = PTRACE_O_TRACESYSGOOD | (spec_.suspendSeccomp ? PTRACE_O_SUSPEND_SECCOMP : 0);
    if (ptrace(PTRACE_SEIZE, tid_, nullptr, reinterpret_cast<void*>(options)) != 0) {
      return failErrno("attach", "PTRACE_SEIZE");
    }
    attached_ = true;
    where_ = Where::Running;
    return true;
  }

  bool waitStop(Stop* stop) {
    int status = 0;
    for (unsigned spin = 0;; spin++) {
      // A traced group leader is reported only once every other thread is reaped, and an
      // exited waiter is reaped only by us (others_.service()): when ours is the leader and
      // waiters are seized, a blocking wait could wait for ever, so poll then, yielding
      // first, sleeping later. Any other thread's stops are reported at once: block.
      bool poll = tid_ == spec_.pid && !others_.empty();
      pid_t r = waitpid(tid_, &status, __WALL | (poll ? WNOHANG : 0));
      if (r == tid_) break;
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == ECHILD) return failGone("wait");
      if (r < 0) return failErrno("wait", "waitpid");
      others_.service();
      if (spin % 256 == 255) {
        char st = procfs::state(spec_.pid, tid_);
        if (st == 'Z' || st == 'X' || st == '?') return failGone("wait");
      }
      if (spin < 1000) {
        sched_yield();
      } else {
        usleep(20);
      }
    }
    return classifyStatus(status, stop);
  }

  bool classifyStatus(int status, Stop* stop) {
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      where_ = Where::Gone;
      stop->kind = StopKind::Exited;
      return true;
    }
    int sig = WSTOPSIG(status);
    int event = status >> 16;
    stop->sig = sig;
    if (event == PTRACE_EVENT_STOP) {
      stop->kind = StopKind::EventStop;
      where_ = Where::SignalPath;
    } else if (sig == (SIGTRAP | 0x80)) {
      stop->kind = StopKind::SyscallStop;
      where_ = Where::SyscallExit;  // refined by the caller for entry stops
    } else {
      stop->kind = StopKind::SignalDelivery;
      where_ = Where::SignalPath;
    }
    return true;
  }

  // Waits until the thread stops in the signal path after a PTRACE_INTERRUPT, letting
  // through any signal that is delivered first.
  bool waitForSignalPathStop(const char* stage) {
    for (;;) {
      Stop stop;
      if (!waitStop(&stop)) return false;
      switch (stop.kind) {
        case StopKind::Exited:
          return failGone(stage);
        case StopKind::EventStop:
          if (isStopSignal(stop.sig)) groupStopped_ = true;
          return true;
        case StopKind::SignalDelivery:
          if (stop.sig == SIGSTOP) {
            classifyStop();  // passed on either way, so that the group stops
          } else {
            out_->signalsDelivered++;
          }
          if (!resume(PTRACE_CONT, stop.sig, stage)) return false;
          continue;
        case StopKind::SyscallStop:
          // Not expected before our first call; keep the thread moving.
          if (!resume(PTRACE_CONT, 0, stage)) return false;
          continue;
      }
    }
  }

  bool resume(enum __ptrace_request how, int sig, const char* stage) {
    if (ptrace(how, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0) {
      return failErrno(stage, how == PTRACE_SYSCALL ? "PTRACE_SYSCALL" : "PTRACE_CONT");
    }
    where_ = Where::Running;
    return true;
  }

  bool setRegs(const arch::Regs& regs, const char* stage) {
    if (!arch::setRegs(tid_, regs)) return failErrno(stage, "PTRACE_SETREGS");
    return true;
  }

  bool saveRegisters() {
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

  bool findSyscallInstruction() {
    if (spec_.vdsoStart == 0 || spec_.vdsoEnd <= spec_.vdsoStart ||
        spec_.vdsoEnd - spec_.vdsoStart > kMaxVdsoBytes) {
      return fail("arch", ENOEXEC, "the target has no usable [vdso] mapping to borrow a syscall instruction from");
    }
    std::string code(spec_.vdsoEnd - spec_.vdsoStart, '\0');
    iovec local{&code[0], code.size()};
    iovec remote{reinterpret_cast<void*>(spec_.vdsoStart), code.size()};
    ssize_t n = process_vm_readv(spec_.pid, &local, 1, &remote, 1, 0);
    if (n <= 0) return failErrno("arch", "reading the target's [vdso]");
    long off = arch::findSyscallInstruction(reinterpret_cast<const uint8_t*>(code.data()),
                                            static_cast<size_t>(n));
    if (off < 0) return fail("arch", ENOEXEC, "no syscall instruction found in the target's [vdso]");
    insnAddr_ = spec_.vdsoStart + static_cast<uint64_t>(off);
    return true;
  }

  // Runs one call; false only when the session itself failed.
  bool runCall(const Syscall& call, SyscallOutcome* res) {
    int retries = 0;
    for (;;) {
      arch::Regs regs = arch::prepareSyscall(saved_, insnAddr_, call.nr, call.args);
      if (!setRegs(regs, "inject")) return false;
        if (!resume(PTRACE_SYSCALL, 0, "inject")) return false;
      Stop stop;
      if (!waitStop(&stop)) return false;
      // Each stop is handled here; a SIGSTOP passed on in place leads straight to the next.
      for (;;) {
        if (stop.kind == StopKind::Exited) return failGone("inject");
        if (stop.kind == StopKind::SyscallStop) {
          // Normally the entry stop of our call. Checked, not assumed: were it the exit
          // stop (the call already ran), registers set now would run something else.
          arch::Regs now;
          if (!arch::getRegs(tid_, &now)) return failErrno("inject", "PTRACE_GETREGS");
          if (arch::atSyscallEntry(now)) {
            where_ = Where::SyscallEntry;
            faultPoint("syscall-entry");
            return finishCall(call, res);
          }
          return recordResult(now, 0, res);
        }
        if (++retries > kMaxSignalRetries) {
          return fail("inject", EAGAIN, "the target receives signals or stops too fast to run a call between them");
        }
        if (stop.kind == StopKind::EventStop) {
          // A group stop (ours or someone's) or a leftover interrupt trap: keep going; the
          // kernel puts the thread back into the group stop when we detach.
          if (isStopSignal(stop.sig)) groupStopped_ = true;
          break;
        }
        if (stop.sig == SIGSTOP) {
          // SIGSTOP (ours, or someone's): let the thread take the group stop right here; a
          // stop builds no signal frame, so our registers may stay in place.
          classifyStop();
          if (!resume(PTRACE_SYSCALL, SIGSTOP, "inject")) return false;
          if (!waitStop(&stop)) return false;
          continue;
        }
        // A signal arrived before our call started: deliver it with the thread's own
        // registers, then take the thread again.
        if (!deliverSignal(stop.sig)) return false;
        break;
      }
    }
  }

  // From the entry stop of our call to its exit stop.
  bool finishCall(const Syscall& call, SyscallOutcome* res) {
    uint64_t entered = nowNs();
    if (!resume(PTRACE_SYSCALL, 0, "inject")) return false;
    Stop stop;
    if (!waitStop(&stop)) return false;
    if (stop.kind == StopKind::Exited) return failGone("inject");
    if (stop.kind != StopKind::SyscallStop) {
      std::ostringstream msg;
      msg << "unexpected stop (signal " << stop.sig << ") instead of the syscall exit of call " << call.nr;
      return fail("inject", EIO, msg.str());
    }
    arch::Regs after;
    if (!arch::getRegs(tid_, &after)) return failErrno("inject", "PTRACE_GETREGS");
    return recordResult(after, nowNs() - entered, res);
  }

  bool recordResult(const arch::Regs& after, uint64_t ns, SyscallOutcome* res) {
    res->ns = ns;
    int64_t ret = arch::syscallReturn(after);
    res->ret = ret;
    res->err = (ret < 0 && ret >= -4095) ? static_cast<int>(-ret) : 0;
    where_ = Where::SyscallExit;
    faultPoint("syscall-exit");
    return true;
  }

  bool deliverSignal(int sig) {
    // A signal that interrupts calls by itself gets the thread's registers as they were;
    // one that does not (ignored, or default-ignore, queued only because we trace the
    // thread) must not turn our stop into an EINTR.
    if (!setRegs(signalInterrupts(sig) ? saved_ : finalRegisters(), "inject")) return false;
    if (!resume(PTRACE_CONT, sig, "inject")) return false;
    out_->signalsDelivered++;
    if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return failErrno("interrupt", "PTRACE_INTERRUPT");
    if (!waitForSignalPathStop("interrupt")) return false;
    return saveRegisters();
  }

  bool undoBefore(size_t failed) {
    for (size_t j = failed; j-- > 0;) {
      const BatchOp& op = spec_.ops[j];
      if (!op.hasUndo || out_->results[j].err != 0) continue;
      SyscallOutcome res;
      if (!runCall(op.undo, &res)) return false;
      out_->undoResults.push_back(res);
    }
    return true;
  }

  procfs::SignalState readSignalState() { return procfs::signalState(spec_.pid, tid_); }

  // The registers to put back: the saved ones, or the saved ones re-issuing a call that
  // returned EINTR only because we stopped the thread.
  arch::Regs finalRegisters() {
    procfs::SignalState st = readSignalState();
    // While we block its signals, what counts is the thread's own mask.
    uint64_t blocked = signalsBlocked_ ? ownMask_ : st.blocked;
    if (eintrOnlyFromOurStop(spec_.pid, saved_, st, blocked)) {
      out_->rearmed = true;
      return arch::rearmSyscall(saved_);
    }
    return saved_;
  }

  // True when `sig`, about to be delivered, interrupts a blocking call by itself (caught,
  // or a stop signal).
  bool signalInterrupts(int sig) {
    procfs::SignalState st = readSignalState();
    return !st.known || (sigbit(sig) & (st.caught | kStopSignals)) != 0;
  }

  bool finish() { return restoreAndDetach(); }

  // Puts the thread's registers back (re-issuing an EINTR'd call if we caused it) and
  // detaches, from whichever stop the thread is in.
  bool restoreAndDetach() {
    if (!haveSaved_) return detach();
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
    }
    if (!setRegs(final, "restore")) return false;
    if (!restoreSignalMask()) return false;
    if (needsKernelRestart) {
      // A handled signal may turn the restart into EINTR (SA_RESTART or not): the kernel
      // decides, on the thread's own registers.
      if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return failErrno("restore", "PTRACE_INTERRUPT");
      if (!resume(PTRACE_CONT, 0, "restore")) return false;
      if (!waitForSignalPathStop("restore")) return false;
    }
    return detach();
  }

  // A signal the thread catches is pending (and not blocked by its own mask).
  bool caughtSignalPending() {
    procfs::SignalState st = readSignalState();
    uint64_t blocked = signalsBlocked_ ? ownMask_ : st.blocked;
    return !st.known || (st.pending & ~blocked & st.caught) != 0;
  }

  bool detach() {
    // Checked while we still hold the thread: once detached it may dequeue a pending
    // foreign SIGSTOP itself, and then nothing would show it any more. The same read
    // counts the signals our mask kept pending (one /proc read per session, not two).
    bool checkForeign = spec_.stopProcess && (ownStopSeen_ || groupStopped_);
    if (checkForeign || signalsWereBlocked_) {
      procfs::SignalState st = readSignalState();
      if (checkForeign && st.known && (st.pending & kStopSignals) != 0) noteForeignStop();
      if (signalsWereBlocked_ && st.known) out_->signalsDeferred = __builtin_popcountll(st.pending & ~ownMask_ & ~kStopSignals);
    }
    if (ptrace(PTRACE_DETACH, tid_, nullptr, nullptr) != 0) return failErrno("detach", "PTRACE_DETACH");
    out_->pauseNs = pauseStart_ ? nowNs() - pauseStart_ : 0;
    where_ = Where::NotAttached;
    if (haveSaved_ && (journalWritten_ || spec_.haveRestoreRegs)) journal_.markRestored();
    return true;
  }

  // At the entry of one of our calls, registers put back now would make the kernel run
  // the thread's own interrupted call again with its saved arguments. Cancel ours and go
  // on to the exit stop first.
  bool leaveSyscallEntry() {
    arch::Regs regs;
    if (!arch::getRegs(tid_, &regs)) return failErrno("restore", "PTRACE_GETREGS");
    if (!setRegs(arch::cancelSyscall(regs), "restore")) return false;
    if (!resume(PTRACE_SYSCALL, 0, "restore")) return false;
    Stop stop;
    if (!waitStop(&stop)) return false;
    if (stop.kind == StopKind::Exited) return failGone("restore");
    where_ = Where::SyscallExit;
    return true;
  }

  // Error path: put the thread back as it was and let it go; the first error is the one
  // reported. Returns false so callers can `return cleanup();`.
  bool cleanup() {
    if (where_ == Where::NotAttached || where_ == Where::Gone) return false;
    if (where_ == Where::Running) {
      // Only reachable when an interrupt or resume could not be completed; wait for the
      // thread to stop so it can be detached (it is never left traced).
      if (!waitForSignalPathStop("interrupt")) return false;
    }
    restoreAndDetach();
    return false;
  }

  const BatchSpec& spec_;
  BatchOutcome* out_;
  InjectError* error_;
  pid_t tid_;
  Where where_ = Where::NotAttached;
  arch::Regs saved_{};
  bool haveSaved_ = false;
  bool groupStopped_ = false;
  bool attached_ = false;
  bool wasStopped_ = false;
  bool ownStopSeen_ = false;
  bool foreignStop_ = false;
  bool journalWritten_ = false;
  bool signalsBlocked_ = false;
  bool signalsWereBlocked_ = false;
  uint64_t ownMask_ = 0;
  Journal journal_;
  OwnStop ownStop_;
  OtherThreads others_;
  uint64_t insnAddr_ = 0;
  uint64_t pauseStart_ = 0;
};

}  // namespace

bool runBatch(const BatchSpec& spec, BatchOutcome* outcome, InjectError* error) {
  Session session(spec, outcome, error);
  return session.run();
}

}  // namespace lockmem
