// Our SIGSTOP, told apart from everyone else's in any pid namespace.
//
// The sender's pid in a siginfo is translated into the receiver's pid namespace: a signal
// sent from the host to a process in a container reads si_pid == 0 there (kernel
// send_signal_locked: "From an ancestor pid namespace?"), so a pid can never say "ours"
// (seen: a container process left stopped after a successful lock). We send the stop with
// rt_sigqueueinfo(SI_QUEUE) instead, carrying a per-session random cookie in si_value,
// which the kernel passes through unchanged; PTRACE_GETSIGINFO shows it to us when the
// stop is dequeued.
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <cstdint>

namespace lockmem {

class OwnStop {
 public:
  OwnStop();
  // Sends SIGSTOP to the process; false with errno set.
  bool send(pid_t pid);
  bool sent() const { return sent_; }
  // A SIGSTOP was already pending when we sent ours (so it was merged into that one).
  bool pendingBefore() const { return sent_ && pendingBefore_; }
  // True when the siginfo of a dequeued SIGSTOP is the one we sent.
  bool isOurs(const siginfo_t& info) const;

 private:
  uint32_t cookie_;
  bool sent_ = false;
  // A SIGSTOP was already pending when we sent ours: ours was merged into it (standard
  // signals do not queue), so the one dequeued carries someone else's siginfo.
  bool pendingBefore_ = false;
};

}  // namespace lockmem
