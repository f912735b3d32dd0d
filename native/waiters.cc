#include "waiters.h"

#include "clock.h"

#include <errno.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

namespace lockmem {
namespace {

// How long the threads that are not seized get to reach the stop before each is seized
// and interrupted, which waits for it for sure (and costs a round trip per thread).
constexpr uint64_t kStopPollNs = 100 * 1000000ull;

bool precededBySyscallInstruction(pid_t pid, uint64_t pc) {
  size_t len = arch::syscallInstructionLength();
  uint8_t bytes[16] = {0};
  iovec local{bytes, len};
  iovec remote{reinterpret_cast<void*>(pc - len), len};
  return process_vm_readv(pid, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(len) &&
         arch::isSyscallInstruction(bytes);
}

}  // namespace

bool eintrOnlyFromOurStop(pid_t pid, const arch::Regs& regs, const procfs::SignalState& st, uint64_t blocked) {
  if (arch::currentSyscall(regs) < 0 || arch::returnValue(regs) != -EINTR) return false;
  if (!st.known) return false;  // cannot tell: do not re-issue
  if ((st.pending & ~blocked & (st.caught | kStopSignals)) != 0) return false;
  return precededBySyscallInstruction(pid, arch::pc(regs));
}

OtherThreads::OtherThreads(pid_t pid, pid_t injected, const std::vector<long>& eintrSyscalls,
                           std::function<void(const siginfo_t&)> onStopSignal)
    : pid_(pid), injected_(injected), eintr_(eintrSyscalls), onStopSignal_(std::move(onStopSignal)) {}

OtherThreads::~OtherThreads() { releaseAll(); }

bool OtherThreads::eintrProne(long nr) const {
  return nr >= 0 && std::find(eintr_.begin(), eintr_.end(), nr) != eintr_.end();
}

void OtherThreads::seizeWaiters() {
  if (eintr_.empty()) return;
  for (pid_t t : procfs::threadIds(pid_)) {
    if (t == injected_ || !eintrProne(procfs::threadSyscall(pid_, t))) continue;
    // Seizing stops nothing: the thread stays in its call until our SIGSTOP arrives.
    if (ptrace(PTRACE_SEIZE, t, nullptr, nullptr) != 0) continue;
    waiters_.push_back({t, State::Running});
    // While it is still in the call: what a re-issue needs and the stop hides (arm64).
    arch::rememberBlockedCall(pid_, t);
  }
}

void OtherThreads::handleStatus(Waiter& w, int status) {
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    w.state = State::Gone;
    return;
  }
  if (!WIFSTOPPED(status)) return;
  if ((status >> 16) == PTRACE_EVENT_STOP) {
    // The group stop (or our interrupt) reached it: it stays trapped until we detach it.
    w.state = State::Trapped;
    return;
  }
  // A signal-delivery stop: the thread dequeued a signal, with its own registers in place.
  // Pass it on at once; a SIGSTOP (ours, most often: the kernel hands a process-wide signal
  // to the main thread first) is what starts the group stop.
  int sig = WSTOPSIG(status);
  if (sig == SIGSTOP) {
    siginfo_t info;
    if (ptrace(PTRACE_GETSIGINFO, w.tid, nullptr, &info) == 0) onStopSignal_(info);
  } else {
    signalsDelivered_++;
  }
  if (ptrace(PTRACE_CONT, w.tid, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0 && errno == ESRCH) {
    w.state = State::Gone;
  }
}

void OtherThreads::service() {
  for (Waiter& w : waiters_) {
    if (w.state != State::Running) continue;
    int status = 0;
    pid_t r = waitpid(w.tid, &status, __WALL | WNOHANG);
    if (r == w.tid) {
      handleStatus(w, status);
    } else if (r < 0 && errno == ECHILD) {
      w.state = State::Gone;
    }
  }
}

// Waits until the seized thread is trapped (or gone). Called after PTRACE_INTERRUPT, which
// makes it trap at its next opportunity whatever else happens. Polled, not blocking: a
// thread of a process that is being killed may never report again (a traced group leader
// is reported only once every other thread is reaped), and /proc then shows it dying.
bool OtherThreads::waitTrapped(Waiter& w) {
  while (w.state == State::Running) {
    int status = 0;
    pid_t r = waitpid(w.tid, &status, __WALL | WNOHANG);
    if (r < 0 && errno == EINTR) continue;
    if (r == w.tid) {
      handleStatus(w, status);
      // A signal passed on runs first; ask again so that the trap follows it.
      if (w.state == State::Running) ptrace(PTRACE_INTERRUPT, w.tid, nullptr, nullptr);
      continue;
    }
    char st = r == 0 ? procfs::state(pid_, w.tid) : '?';
    if (r < 0 || st == 'Z' || st == 'X' || st == '?') {
      w.state = State::Gone;
      break;
    }
    usleep(20);
  }
  return w.state == State::Trapped;
}

// The signal state of a seized, trapped thread from ptrace instead of its /proc status
// file, whose text the kernel formats on every read (~25 us a thread here: most of the
// re-arm time with 1,000 waiters): its mask (PTRACE_GETSIGMASK), its private pending
// signals (PTRACE_PEEKSIGINFO on its own queue), and the process-wide part (shared pending,
// caught) read once per pass. A thread stopped inside a temporary mask (epoll_pwait, ppoll,
// ...) is read from /proc: what counts there is the mask of the call, SigBlk, while
// PTRACE_GETSIGMASK returns the thread's real mask (Linux >= 5.2). So is a queue longer
// than we look at. A signal left out of the queue (allocation failure) is at worst one we
// do not see: the re-issued call then ends with EINTR at once, as it would have anyway.
static procfs::SignalState traceeSignalState(pid_t pid, pid_t tid, const arch::Regs& regs,
                                             const procfs::SignalState& process) {
  if (!process.known || arch::inTemporarySigmask(regs)) return procfs::signalState(pid, tid);
  procfs::SignalState st;
  uint64_t blocked = 0;
  if (ptrace(PTRACE_GETSIGMASK, tid, sizeof(blocked), &blocked) != 0) return procfs::signalState(pid, tid);
  constexpr int kPeek = 32;
  siginfo_t queued[kPeek];
  __ptrace_peeksiginfo_args args{0, 0, kPeek};  // offset 0, the thread's own queue
  long n = ptrace(PTRACE_PEEKSIGINFO, tid, &args, queued);
  if (n < 0 || n >= kPeek) return procfs::signalState(pid, tid);
  uint64_t own = 0;
  for (long i = 0; i < n; i++) {
    if (queued[i].si_signo >= 1 && queued[i].si_signo <= 64) own |= sigbit(queued[i].si_signo);
  }
  st.known = true;
  st.blocked = blocked;
  st.sharedPending = process.sharedPending;
  st.pending = own | process.sharedPending;
  st.caught = process.caught;
  return st;
}

bool OtherThreads::rearmIfInterrupted(pid_t tid, const procfs::SignalState* process) {
  arch::Regs regs;
  if (!arch::getRegs(tid, &regs)) return false;
  // Only a call that came back with EINTR needs the signal state at all.
  if (arch::currentSyscall(regs) < 0 || arch::returnValue(regs) != -EINTR) return false;
  procfs::SignalState st = process ? traceeSignalState(pid_, tid, regs, *process) : procfs::signalState(pid_, tid);
  if (!eintrOnlyFromOurStop(pid_, regs, st, st.blocked)) return false;
  if (!arch::setRegs(tid, arch::rearmSyscall(regs))) return false;
  rearmed_++;
  return true;
}

int OtherThreads::rearmAll() {
  rearmed_ = 0;
  for (Waiter& w : waiters_) {
    if (w.state == State::Running) ptrace(PTRACE_INTERRUPT, w.tid, nullptr, nullptr);
  }
  std::vector<pid_t> seen{injected_};
  // What every thread shares (shared pending, caught), read once: the group is stopped.
  procfs::SignalState process = procfs::signalState(pid_, 0);
  for (Waiter& w : waiters_) {
    seen.push_back(w.tid);
    if (!waitTrapped(w)) continue;
    rearmIfInterrupted(w.tid, &process);
    // Back into the group stop; the SIGCONT that follows resumes it.
    ptrace(PTRACE_DETACH, w.tid, nullptr, nullptr);
    w.state = State::Gone;
  }
  waiters_.clear();
  checkUnseized(seen);
  return rearmed_;
}

void OtherThreads::seizeAndRearm(pid_t t) {
  if (ptrace(PTRACE_SEIZE, t, nullptr, nullptr) != 0) return;
  ptrace(PTRACE_INTERRUPT, t, nullptr, nullptr);
  Waiter w{t, State::Running};
  if (waitTrapped(w)) {
    rearmIfInterrupted(t, nullptr);
    ptrace(PTRACE_DETACH, t, nullptr, nullptr);
  }
}

void OtherThreads::checkUnseized(const std::vector<pid_t>& skip) {
  if (eintr_.empty()) return;
  std::vector<pid_t> pending;
  for (pid_t t : procfs::threadIds(pid_)) {
    if (std::find(skip.begin(), skip.end(), t) == skip.end()) pending.push_back(t);
  }
  uint64_t pollUntil = nowNs() + kStopPollNs;
  while (!pending.empty()) {
    bool late = nowNs() > pollUntil;
    std::vector<pid_t> still;
    for (pid_t t : pending) {
      char st = procfs::state(pid_, t);
      if (st == '?' || st == 'Z' || st == 'X') continue;  // exited
      if (st == 'T' || st == 't') {
        // Stopped for good: its syscall file now tells where it was.
        // (arm64 shows "-1" for a call the stop turned into EINTR: a remembered one counts.)
        long nr = procfs::threadSyscall(pid_, t);
        if (eintrProne(nr) || nr == procfs::kUnknown || arch::remembersCall(t)) seizeAndRearm(t);
        continue;
      }
      if (!late) {
        still.push_back(t);
      } else if (st != 'D') {
        // Not stopped yet (not scheduled since our SIGSTOP, or the stop was cancelled):
        // seizing and interrupting it waits for it for sure.
        seizeAndRearm(t);
      }
      // 'D': an uninterruptible sleep ignores signals and never returns EINTR for them.
    }
    pending.swap(still);
    if (!pending.empty()) usleep(50);
  }
}

void OtherThreads::releaseAll() {
  for (Waiter& w : waiters_) {
    if (w.state == State::Running) ptrace(PTRACE_INTERRUPT, w.tid, nullptr, nullptr);
  }
  for (Waiter& w : waiters_) {
    if (waitTrapped(w)) ptrace(PTRACE_DETACH, w.tid, nullptr, nullptr);
  }
  waiters_.clear();
}

}  // namespace lockmem
