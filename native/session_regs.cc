// The thread's state a session saves and puts back: the attach itself, its registers and
// its signal mask (Seized, Saved, Blocked in session.h).
#include "session.h"

#include <errno.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/utsname.h>

#include <cstdio>
#include <sstream>

namespace lockmem {
namespace detail {

bool Session::attach() {
  long options = PTRACE_O_TRACESYSGOOD | (spec_.suspendSeccomp ? PTRACE_O_SUSPEND_SECCOMP : 0);
  if (ptrace(PTRACE_SEIZE, tid_, nullptr, reinterpret_cast<void*>(options)) != 0) {
    return failErrno(Stage::Attach, "PTRACE_SEIZE");
  }
  phase_ = Phase::Seized;
  where_ = Where::Running;
  return true;
}

// Recovering: the registers the dead run journaled are the thread's own.
bool Session::useJournaledRegisters() {
  arch::Regs current;
  if (!arch::getRegs(tid_, &current)) return failErrno(Stage::Getregs, "PTRACE_GETREGS");
  if (recovery_->regs.size() != sizeof(arch::Regs)) {
    return fail(Stage::Journal, EINVAL, "the journaled register block does not match this architecture");
  }
  memcpy(&saved_, recovery_->regs.data(), sizeof(saved_));
  // The thread may be anywhere in an injected state: treat it as changed.
  phase_ = Phase::Saved;
  return true;
}

bool Session::setRegs(const arch::Regs& regs, Stage stage) {
  if (!arch::setRegs(tid_, regs)) return failErrno(stage, "PTRACE_SETREGS");
  return true;
}

// Held -> Saved the first time; again after a signal was delivered mid-injection
// (deliverSignal()), which leaves the phase as it is.
bool Session::saveRegisters() {
  if (!arch::getRegs(tid_, &saved_)) return failErrno(Stage::Getregs, "PTRACE_GETREGS");
  // From here on, what undoes us is putting these back (with an EINTR of ours re-issued).
  if (phase_ == Phase::Held) phase_ = Phase::Saved;
  if (!arch::isNativeAbi(saved_)) {
    std::ostringstream msg;
    msg << "thread " << tid_ << " of process " << spec_.pid << " runs a 32-bit (compat) ABI; only "
        << arch::name() << " targets are supported";
    return fail(Stage::Arch, ENOEXEC, msg.str());
  }
  return true;
}

// Saved -> Blocked: blocks every signal of the thread for the injection (see the top of
// inject.cc); the thread's own mask goes into the journal first, so that a later run can
// put it back.
bool Session::deferSignals() {
  // Without a journal nothing could put the mask back after a crash. Before Linux 5.2,
  // PTRACE_GETSIGMASK read a temporary mask instead of the real one.
  if (!journal_.enabled() || (arch::inTemporarySigmask(saved_) && !kernelAtLeast(5, 2))) return true;
  uint64_t current = 0;
  if (ptrace(PTRACE_GETSIGMASK, tid_, sizeof(current), &current) != 0) return failErrno(Stage::Getregs, "PTRACE_GETSIGMASK");
  // Recovering a run that blocked them: what we read now is its mask, not the thread's.
  uint64_t own = recovery_ && recovery_->haveSigmask ? recovery_->sigmask : current;
  if (!journal_.saveSigmask(own)) {
    if (errno == ENOTSUP) return true;  // an older run's journal: signals stay deliverable
    return failErrno(Stage::Journal, "journaling the signal mask");
  }
  uint64_t all = ~0ull;  // the kernel leaves SIGKILL and SIGSTOP out
  if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof(all), &all) != 0) return failErrno(Stage::Inject, "PTRACE_SETSIGMASK");
  ownMask_ = own;
  phase_ = Phase::Blocked;
  return true;
}

bool Session::kernelAtLeast(int major, int minor) {
  utsname u;
  int ma = 0, mi = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

// Before the thread may run its own code again.
bool Session::restoreSignalMask() {
  if (phase_ != Phase::Blocked) return true;
  uint64_t own = *ownMask_;
  if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof(own), &own) != 0) return failErrno(Stage::Restore, "PTRACE_SETSIGMASK");
  phase_ = Phase::Restored;
  return true;
}

}  // namespace detail
}  // namespace lockmem
