#include "group_stop.h"

#include <signal.h>
#include <unistd.h>

#include <cstdint>

#include "clock.h"
#include "procfs.h"

namespace lockmem {

namespace {

// How long threads we detach may take to be back in the group stop before the SIGCONT.
constexpr uint64_t kRestopTimeoutNs = 2000 * 1000000ull;

}  // namespace

bool stopPending(pid_t pid) {
  procfs::SignalState st = procfs::signalState(pid, pid);
  return st.known && (st.sharedPending & sigbit(SIGSTOP)) != 0;
}

bool anyThreadStopped(pid_t pid) {
  for (pid_t t : procfs::threadIds(pid)) {
    char st = procfs::state(pid, t);
    if (st == 'T' || st == 't') return true;
  }
  return false;
}

// A thread just detached still reads 't' until it runs into the group stop ('T'): that
// is not there yet (under CPU stress, 1 EINTR in ~10 runs of the container suite came
// from counting it as stopped). A 't' that someone else traces is not ours to wait for.
void waitUntilAllStopped(pid_t pid) {
  uint64_t until = nowNs() + kRestopTimeoutNs;
  for (pid_t t : procfs::threadIds(pid)) {
    for (;;) {
      char st = procfs::state(pid, t);
      bool there = st == 'T' || st == 'D' || st == 'Z' || st == 'X' || st == '?' || (st == 't' && procfs::tracerPid(pid, t) != 0);
      if (there || nowNs() > until) break;
      usleep(10);
    }
  }
}

}  // namespace lockmem
