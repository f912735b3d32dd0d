// Waiting for the thread's stops and telling them apart (`Where` in session.h), and
// resuming it.
#include "session.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>


namespace lockmem {
namespace detail {

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
    if (r < 0 && errno == ECHILD) return failGone(Stage::Wait);
    if (r < 0) return failErrno(Stage::Wait, "waitpid");
    others_.service();
    if (spin % 256 == 255) {
      char st = procfs::state(spec_.pid, tid_);
      if (st == 'Z' || st == 'X' || st == '?') return failGone(Stage::Wait);
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
    if (r < 0 && errno != EINTR) return failErrno(Stage::Wait, "waitpid") && false;
    others_.service();
    if (nowNs() > until) return false;
    // Sleep, not sched_yield: on a busy machine a spinning tracer takes the CPU the
    // target needs to reach the stop (a SCHED_IDLE target never got it).
    usleep(20);
  }
}

bool Session::classifyStatus(int status, Stop* stop) {
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    phase_ = Phase::Gone;
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
bool Session::waitForSignalPathStop(Stage stage) {
  for (;;) {
    Stop stop;
    if (!waitStop(&stop)) return false;
    switch (stop.kind) {
      case StopKind::Exited:
        return failGone(stage);
      case StopKind::EventStop:
        if (isStopSignal(stop.sig)) facts_.groupStopped = true;
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

bool Session::resume(enum __ptrace_request how, int sig, Stage stage) {
  if (ptrace(how, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0) {
    return failErrno(stage, how == PTRACE_SYSCALL ? "PTRACE_SYSCALL" : "PTRACE_CONT");
  }
  where_ = Where::Running;
  return true;
}

}  // namespace detail
}  // namespace lockmem
