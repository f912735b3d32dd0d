// Waiting for the thread's stops and telling them apart: the hold (our group stop) before
// any register changes, the signal-path stop after an interrupt, and whose SIGSTOP it was.
#include "session.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>

#include "fault.h"

namespace lockmem {
namespace detail {

namespace {

// How long threads we detach may take to be back in the group stop before the SIGCONT.
constexpr uint64_t kRestopTimeoutNs = 2000 * 1000000ull;
// How long the process may take to enter our group stop before the session gives up.
constexpr uint64_t kHoldTimeoutNs = 2000 * 1000000ull;

}  // namespace

// Stopped in the signal path. With stopProcess our SIGSTOP has been sent too, and the
// group stop must be in effect before any register changes: if we die from then on, the
// thread stops (DESIGN.md: "the tracer dies") instead of running on our registers.
bool Session::waitForHold() {
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
bool Session::holdRefused() {
  std::ostringstream msg;
  msg << "process " << spec_.pid << " did not enter the group stop lockmem asked for within "
      << kHoldTimeoutNs / 1000000 << " ms (a SIGCONT from someone else, or no CPU time for it)";
  return fail("interrupt", EAGAIN, msg.str());
}

bool Session::waitStop(Stop* stop) {
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

// waitStop until an absolute deadline (polling, and passing on what the seized waiters
// stop for meanwhile): false when nothing came in time.
bool Session::waitStopFor(Stop* stop, uint64_t until) {
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

bool Session::classifyStatus(int status, Stop* stop) {
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
bool Session::waitForSignalPathStop(const char* stage) {
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

bool Session::resume(enum __ptrace_request how, int sig, const char* stage) {
  if (ptrace(how, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0) {
    return failErrno(stage, how == PTRACE_SYSCALL ? "PTRACE_SYSCALL" : "PTRACE_CONT");
  }
  where_ = Where::Running;
  return true;
}

bool Session::stopPending() {
  procfs::SignalState st = procfs::signalState(spec_.pid, spec_.pid);
  return st.known && (st.sharedPending & sigbit(SIGSTOP)) != 0;
}

bool Session::anyThreadStopped() {
  for (pid_t t : procfs::threadIds(spec_.pid)) {
    char st = procfs::state(spec_.pid, t);
    if (st == 'T' || st == 't') return true;
  }
  return false;
}

// A thread just detached still reads 't' until it runs into the group stop ('T'): that
// is not there yet (under CPU stress, 1 EINTR in ~10 runs of the container suite came
// from counting it as stopped). A 't' that someone else traces is not ours to wait for.
void Session::waitUntilAllStopped() {
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
bool Session::foreignStopPending() {
  procfs::SignalState st = readSignalState();
  return st.known && (st.pending & kStopSignals) != 0;
}

// At a SIGSTOP signal-delivery stop of ours or of a seized waiter: our own stop (the
// siginfo we sent, stopsig.h) or someone else's, whose stop must outlast our session.
void Session::classifyStop() {
  siginfo_t info;
  memset(&info, 0, sizeof(info));
  if (ptrace(PTRACE_GETSIGINFO, tid_, nullptr, &info) != 0) info.si_code = SI_KERNEL;
  classifyStop(info);
}

void Session::classifyStop(const siginfo_t& info) {
  if (ownStop_.isOurs(info) && !ownStopSeen_) {
    ownStopSeen_ = true;
  } else {
    noteForeignStop();
  }
}

// Someone else wants the process stopped: so must a later run that finishes our session
// if we die, which only the journal can tell (the signal itself is consumed).
void Session::noteForeignStop() {
  foreignStop_ = true;
  if (journalWritten_ || spec_.haveRestoreRegs) journal_.markForeignStop();
}

}  // namespace detail
}  // namespace lockmem
