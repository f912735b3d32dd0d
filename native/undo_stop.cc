// Recovery of a run that died while the process was (or was being) group-stopped by it,
// but with no register of ours in any thread: before its registers were changed, or after
// they were back. Nothing is injected and no thread is held; only the stop is undone.
#include <signal.h>
#include <unistd.h>

#include <cstdint>

#include "arch.h"
#include "clock.h"
#include "fault.h"
#include "group_stop.h"
#include "inject.h"
#include "procfs.h"
#include "waiters.h"

namespace lockmem {

namespace {

// How long the dead run's SIGSTOP may take to complete the group stop.
constexpr uint64_t kStopSettleNs = 200 * 1000000ull;

}  // namespace

int undoStop(pid_t pid, const std::vector<long>& eintrSyscalls, const std::vector<procfs::ThreadCall>& blockedCalls) {
  // Every thread is a candidate (none of them is held by us); no SIGSTOP of ours is in
  // flight, so a stop signal one of them takes is not ours to judge: the caller only
  // calls this when the process is to be continued.
  OtherThreads others(pid, 0, eintrSyscalls, [](const siginfo_t&) {});
  // Only what the dead run saw blocked is evidence here, not an earlier session of ours
  // (arm64: without it, an EINTR'd call is left as the kernel made it; native/arch/aarch64.cc).
  arch::seedBlockedCalls(blockedCalls);
  // Only a process that is actually stopped has calls to re-issue. The dead run's SIGSTOP
  // may still be taking effect: give the group stop a moment to complete, but only while
  // that SIGSTOP is still pending or the group stop under way (a thread already stopped):
  // a run that died before sending one left a process that will not stop.
  uint64_t until = nowNs() + kStopSettleNs;
  while (procfs::state(pid) != 'T' && (stopPending(pid) || anyThreadStopped(pid)) && nowNs() < until) usleep(200);
  int rearmed = 0;
  if (procfs::state(pid) == 'T' || anyThreadStopped(pid)) {
    // Every thread the stop may have woken: re-issue the calls it turned into EINTR, and
    // let each one get back into the group stop before the SIGCONT (see Session::release).
    rearmed = others.rearmAll();
    waitUntilAllStopped(pid);
  }
  faultPoint("before-cont");
  // A pending stop may be the dead run's SIGSTOP: continue regardless.
  kill(pid, SIGCONT);
  return rearmed;
}

}  // namespace lockmem
