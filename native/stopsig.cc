#include "stopsig.h"

#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "procfs.h"

namespace lockmem {

OwnStop::OwnStop() {
  // The raw call, not glibc's getrandom() wrapper (glibc 2.25): the addon's glibc floor is
  // 2.17 (provider/agent/host-probe.ts ADDON_GLIBC_FLOOR; tests/unit/glibc-floor.test.ts).
  if (syscall(SYS_getrandom, &cookie_, sizeof(cookie_), GRND_NONBLOCK) != static_cast<long>(sizeof(cookie_))) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    cookie_ = static_cast<uint32_t>(ts.tv_nsec) ^ (static_cast<uint32_t>(getpid()) << 12);
  }
  if (cookie_ == 0) cookie_ = 1;  // a zeroed (lost) siginfo must never match
}

bool OwnStop::send(pid_t pid) {
  procfs::SignalState st = procfs::signalState(pid, pid);
  pendingBefore_ = st.known && (st.sharedPending & (1ull << (SIGSTOP - 1))) != 0;
  siginfo_t info;
  memset(&info, 0, sizeof(info));
  info.si_signo = SIGSTOP;
  info.si_code = SI_QUEUE;
  info.si_pid = getpid();
  info.si_uid = getuid();
  info.si_value.sival_int = static_cast<int>(cookie_);
  if (syscall(SYS_rt_sigqueueinfo, pid, SIGSTOP, &info) != 0) return false;
  sent_ = true;
  return true;
}

bool OwnStop::isOurs(const siginfo_t& info) const {
  if (!sent_) return false;
  if (info.si_code == SI_QUEUE) return static_cast<uint32_t>(info.si_value.sival_int) == cookie_;
  // Out of queue space (RLIMIT_SIGPENDING of the target's user), the kernel still sets the
  // signal but drops its siginfo; the dequeued one then reads SI_USER with pid and uid 0.
  // It is ours if no SIGSTOP was pending before we sent (the same reading from an
  // ancestor namespace's kill(2) would have to land in the microseconds in between).
  return info.si_code == SI_USER && info.si_pid == 0 && info.si_uid == 0 && !pendingBefore_;
}

}  // namespace lockmem
