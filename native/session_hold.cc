// The hold: the thread stopped in the signal path and, with stopProcess, the process in
// our group stop, before any register changes (Seized -> Held in session.h); and whose
// SIGSTOP each one the thread takes is.
#include "session.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>

#include <sstream>

#include "fault.h"

namespace lockmem {
namespace detail {

namespace {

// How long the process may take to enter our group stop before the session gives up.
constexpr uint64_t kHoldTimeoutNs = 2000 * 1000000ull;

}  // namespace

// Stopped in the signal path. With stopProcess our SIGSTOP has been sent too, and the
// group stop must be in effect before any register changes: if we die from then on, the
// thread stops (DESIGN.md: "the tracer dies") instead of running on our registers.
bool Session::waitForHold() {
  if (!waitForSignalPathStop(Stage::Interrupt)) return false;
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
  signalPoint("hold-wait", spec_.pid, [this] { return !facts_.ownStopSeen && !facts_.groupStopped; });
  // Every wait below ends: under the deadline, or for a stop that an interrupt queued
  // first makes certain. (A SIGCONT from someone else may have discarded our SIGSTOP:
  // then no other stop comes, and an unbounded wait once held this thread and the seized
  // waiters for ever.)
  while (!facts_.ownStopSeen && !facts_.groupStopped) {
    if (!resume(PTRACE_CONT, 0, Stage::Interrupt)) return false;
    Stop stop;
    if (!waitStopFor(&stop, until)) {
      if (failed()) return false;
      if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return failErrno(Stage::Interrupt, "PTRACE_INTERRUPT");
      if (!waitForSignalPathStop(Stage::Interrupt)) return false;
      if (facts_.ownStopSeen || facts_.groupStopped) break;
      return holdRefused();
    }
    if (stop.kind == StopKind::Exited) return failGone(Stage::Interrupt);
    if (stop.kind == StopKind::EventStop) {
      if (isStopSignal(stop.sig)) facts_.groupStopped = true;
      continue;
    }
    if (stop.kind == StopKind::SignalDelivery && !passOnDuringHold(stop)) return false;
    // A syscall stop cannot come from PTRACE_CONT; keep the thread where it is.
  }
  return true;
}

// A signal-delivery stop while waiting for the hold: the signal is handed on now (a
// signal left in a delivery stop is lost), with an interrupt queued first: the thread
// stops again once the signal is delivered (a SIGSTOP: in the group stop it starts, if no
// SIGCONT came first). False when the session failed or the hold was refused.
bool Session::passOnDuringHold(const Stop& stop) {
  bool ours = stop.sig == SIGSTOP;
  if (ours) classifyStop();
  else out_->signalsDelivered++;
  if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return failErrno(Stage::Interrupt, "PTRACE_INTERRUPT");
  if (!resume(PTRACE_CONT, stop.sig, Stage::Interrupt)) return false;
  if (!waitForSignalPathStop(Stage::Interrupt)) return false;
  if (ours && !facts_.groupStopped) return holdRefused();
  return true;
}

// Someone's SIGCONT discarded our SIGSTOP, or the machine is too loaded for the thread
// to run at all: never inject without the hold that makes a crash of ours harmless.
bool Session::holdRefused() {
  std::ostringstream msg;
  msg << "process " << spec_.pid << " did not enter the group stop lockmem asked for within "
      << kHoldTimeoutNs / 1000000 << " ms (a SIGCONT from someone else, or no CPU time for it)";
  return fail(Stage::Interrupt, EAGAIN, msg.str());
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
  if (ownStop_.isOurs(info) && !facts_.ownStopSeen) {
    facts_.ownStopSeen = true;
  } else {
    noteForeignStop();
  }
}

// Someone else wants the process stopped: so must a later run that finishes our session
// if we die, which only the journal can tell (the signal itself is consumed).
void Session::noteForeignStop() {
  facts_.foreignStop = true;
  if (journalOwned()) journal_.markForeignStop();
}

}  // namespace detail
}  // namespace lockmem
