// The other threads of a process we group-stop: those blocked in a call that returns
// EINTR after a stop (epoll_wait, io_uring_enter, connect with a timeout, ...: signal(7)
// and src/proc/tasks.ts) must have the call re-issued before the process is continued,
// or the program sees an EINTR it never caused.
//
// Two paths:
// - Fast: threads already blocked in such a call are seized (PTRACE_SEIZE stops nothing)
//   before our SIGSTOP, so that the group stop reaches each of them as a ptrace trap we
//   collect with waitpid; their registers are fixed there and they are detached back into
//   the group stop. No round trip per thread through /proc or a second stop.
// - Complete: every other thread is then checked once it has really stopped. /proc shows
//   a thread that has not reached the stop yet as running (DESIGN.md), so a bounded wait
//   on /proc states can skip it, and the SIGCONT then wakes it into an EINTR (seen under
//   CPU load, where reaching the stop can take longer than any fixed wait). A thread still
//   not stopped after a short poll is seized and interrupted, which waits for it for sure.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <functional>
#include <vector>

#include "arch.h"
#include "procfs.h"

namespace lockmem {

// True when `regs`, of a thread stopped on its way out of a call, show an EINTR that only
// our stop caused: no signal is pending that would have interrupted the call by itself
// (caught, or a stop signal), and the pc follows a syscall instruction, where a re-issue
// can go back to.
bool eintrOnlyFromOurStop(pid_t pid, const arch::Regs& regs, const procfs::SignalState& st, uint64_t blocked);

class OtherThreads {
 public:
  // `onStopSignal` classifies a SIGSTOP that one of the seized threads dequeued.
  OtherThreads(pid_t pid, pid_t injected, const std::vector<long>& eintrSyscalls,
               std::function<void(const siginfo_t&)> onStopSignal);
  ~OtherThreads();
  OtherThreads(const OtherThreads&) = delete;
  OtherThreads& operator=(const OtherThreads&) = delete;

  // Before our SIGSTOP: seize the threads blocked in an EINTR-prone call.
  void seizeWaiters();
  // Without blocking: pass on the signals the seized threads stopped for (our SIGSTOP
  // among them, so that the group stop goes on) and note which ones are trapped.
  void service();
  // Once the group stop is in effect (or will not come): re-issue every call our stop
  // turned into EINTR, in every thread but the injected one, and detach the seized ones
  // back into the group stop. Returns how many calls were re-armed.
  int rearmAll();
  // Detaches whatever is still seized (error paths; the destructor does it too).
  void releaseAll();
  int signalsDelivered() const { return signalsDelivered_; }
  // No seized thread left to wait for.
  bool empty() const {
    for (const Waiter& w : waiters_) {
      if (w.state != State::Gone) return false;
    }
    return true;
  }

 private:
  enum class State { Running, Trapped, Gone };
  struct Waiter {
    pid_t tid;
    State state;
  };
  bool eintrProne(long nr) const;
  void handleStatus(Waiter& w, int status);
  bool waitTrapped(Waiter& w);
  // `process`: the shared part of the signal state, read once per pass (nullptr: read all
  // of it from /proc for this thread).
  bool rearmIfInterrupted(pid_t tid, const procfs::SignalState* process);
  void seizeAndRearm(pid_t tid);
  void checkUnseized(const std::vector<pid_t>& skip);
  int rearmed_ = 0;

  pid_t pid_;
  pid_t injected_;
  const std::vector<long>& eintr_;
  std::function<void(const siginfo_t&)> onStopSignal_;
  std::vector<Waiter> waiters_;
  int signalsDelivered_ = 0;
};

}  // namespace lockmem
