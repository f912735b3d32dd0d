// Our calls: the `syscall` instruction they run from (in the target's [vdso]), the check
// of the target's seccomp filters, and each call from its entry stop to its exit stop.
#include "session.h"

#include <errno.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/uio.h>

#include <sstream>
#include <string>

#include "fault.h"
#include "seccomp.h"

namespace lockmem {
namespace detail {

namespace {

constexpr size_t kMaxVdsoBytes = 1 << 20;
// A thread that receives signals faster than we can run one call makes us give up
// (cleanly) instead of spinning for ever.
constexpr int kMaxSignalRetries = 1000;

}  // namespace

bool Session::findSyscallInstruction() {
  if (spec_.vdsoStart == 0 || spec_.vdsoEnd <= spec_.vdsoStart ||
      spec_.vdsoEnd - spec_.vdsoStart > kMaxVdsoBytes) {
    return fail(Stage::Arch, ENOEXEC, "the target has no usable [vdso] mapping to borrow a syscall instruction from");
  }
  std::string code(spec_.vdsoEnd - spec_.vdsoStart, '\0');
  iovec local{&code[0], code.size()};
  iovec remote{reinterpret_cast<void*>(spec_.vdsoStart), code.size()};
  ssize_t n = process_vm_readv(spec_.pid, &local, 1, &remote, 1, 0);
  if (n <= 0) return failErrno(Stage::Arch, "reading the target's [vdso]");
  long off = arch::findSyscallInstruction(reinterpret_cast<const uint8_t*>(code.data()),
                                          static_cast<size_t>(n));
  if (off < 0) return fail(Stage::Arch, ENOEXEC, "no syscall instruction found in the target's [vdso]");
  insnAddr_ = spec_.vdsoStart + static_cast<uint64_t>(off);
  return true;
}

bool Session::checkSeccomp() {
  SeccompFilters filters;
  if (!readSeccompFilters(tid_, &filters)) return failErrno(Stage::Seccomp, "PTRACE_SECCOMP_GET_FILTER");
  auto check = [&](const Syscall& call) {
    uint32_t action = evaluateSeccomp(filters, arch::auditArch(), static_cast<int>(call.nr), insnAddr_, call.args);
    if (seccompAllows(action)) return true;
    // Named, not only numbered (issue 14: "syscall 325" sent people to a syscall table).
    const char* name = call.nr == arch::nrMlock2()       ? "mlock2"
                       : call.nr == arch::nrMunlock()    ? "munlock"
                       : call.nr == arch::nrMlockall()   ? "mlockall"
                       : call.nr == arch::nrMunlockall() ? "munlockall"
                                                         : nullptr;
    std::ostringstream msg;
    msg << "the seccomp filter of process " << spec_.pid << " answers syscall " << call.nr << " with "
        << seccompActionName(action);
    if (name) msg << ": it does not allow " << name;
    msg << "; lockmem did not make it call anything";
    return fail(Stage::Seccomp, EPERM, msg.str());
  };
  for (const BatchOp& op : spec_.ops) {
    if (!check(op.call)) return false;
    if (op.hasUndo && !check(op.undo)) return false;
  }
  return true;
}

bool Session::seccompAllowsCall(const Syscall& call) {
  SeccompFilters filters;
  // EINVAL: the thread runs no filter (the request needs filter mode; strict mode is
  // refused before any session, src/ops/safety.ts). Any other failure: cannot tell, no.
  if (!readSeccompFilters(tid_, &filters)) return errno == EINVAL;
  return seccompAllows(evaluateSeccomp(filters, arch::auditArch(), static_cast<int>(call.nr), insnAddr_, call.args));
}

// Runs one call; false only when the session itself failed.
bool Session::runCall(const Syscall& call, SyscallOutcome* res) {
  int retries = 0;
  for (;;) {
    arch::Regs regs = arch::prepareSyscall(saved_, insnAddr_, call.nr, call.args);
    if (!setRegs(regs, Stage::Inject)) return false;
    if (!resume(PTRACE_SYSCALL, 0, Stage::Inject)) return false;
    Stop stop;
    if (!waitStop(&stop)) return false;
    // Each stop is handled here; a SIGSTOP passed on in place leads straight to the next.
    for (;;) {
      if (stop.kind == StopKind::Exited) return failGone(Stage::Inject);
      if (stop.kind == StopKind::SyscallStop) {
        // Normally the entry stop of our call. Checked, not assumed: were it the exit
        // stop (the call already ran), registers set now would run something else.
        arch::Regs now;
        if (!arch::getRegs(tid_, &now)) return failErrno(Stage::Inject, "PTRACE_GETREGS");
        if (arch::atSyscallEntry(now)) {
          where_ = Where::SyscallEntry;
          faultPoint("syscall-entry");
          return finishCall(call, res);
        }
        return recordResult(now, 0, res);
      }
      if (++retries > kMaxSignalRetries) {
        return fail(Stage::Inject, EAGAIN, "the target receives signals or stops too fast to run a call between them");
      }
      if (stop.kind == StopKind::EventStop) {
        // A group stop (ours or someone's) or a leftover interrupt trap: keep going; the
        // kernel puts the thread back into the group stop when we detach.
        if (isStopSignal(stop.sig)) facts_.groupStopped = true;
        break;
      }
      if (stop.sig == SIGSTOP) {
        // SIGSTOP (ours, or someone's): let the thread take the group stop right here; a
        // stop builds no signal frame, so our registers may stay in place.
        classifyStop();
        if (!resume(PTRACE_SYSCALL, SIGSTOP, Stage::Inject)) return false;
        if (!waitStop(&stop)) return false;
        continue;
      }
      // A signal arrived before our call started: deliver it with the thread's own
      // registers, then take the thread again.
      if (!deliverSignal(stop.sig)) return false;
      break;
    }
  }
}

// From the entry stop of our call to its exit stop.
bool Session::finishCall(const Syscall& call, SyscallOutcome* res) {
  uint64_t entered = nowNs();
  if (!resume(PTRACE_SYSCALL, 0, Stage::Inject)) return false;
  Stop stop;
  if (!waitStop(&stop)) return false;
  if (stop.kind == StopKind::Exited) return failGone(Stage::Inject);
  if (stop.kind != StopKind::SyscallStop) {
    std::ostringstream msg;
    msg << "unexpected stop (signal " << stop.sig << ") instead of the syscall exit of call " << call.nr;
    return fail(Stage::Inject, EIO, msg.str());
  }
  arch::Regs after;
  if (!arch::getRegs(tid_, &after)) return failErrno(Stage::Inject, "PTRACE_GETREGS");
  return recordResult(after, nowNs() - entered, res);
}

bool Session::recordResult(const arch::Regs& after, uint64_t ns, SyscallOutcome* res) {
  res->ns = ns;
  int64_t ret = arch::syscallReturn(after);
  res->ret = ret;
  res->err = (ret < 0 && ret >= -4095) ? static_cast<int>(-ret) : 0;
  where_ = Where::SyscallExit;
  faultPoint("syscall-exit");
  return true;
}

bool Session::deliverSignal(int sig) {
  // A signal that interrupts calls by itself gets the thread's registers as they were;
  // one that does not (ignored, or default-ignore, queued only because we trace the
  // thread) must not turn our stop into an EINTR.
  if (!setRegs(signalInterrupts(sig) ? saved_ : finalRegisters(), Stage::Inject)) return false;
  if (!resume(PTRACE_CONT, sig, Stage::Inject)) return false;
  out_->signalsDelivered++;
  if (ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) return failErrno(Stage::Interrupt, "PTRACE_INTERRUPT");
  if (!waitForSignalPathStop(Stage::Interrupt)) return false;
  return saveRegisters();
}

bool Session::undoBefore(size_t failed) {
  for (size_t j = failed; j-- > 0;) {
    const BatchOp& op = spec_.ops[j];
    if (!op.hasUndo || out_->results[j].err != 0) continue;
    SyscallOutcome res;
    if (!runCall(op.undo, &res)) return false;
    out_->undoResults.push_back(res);
  }
  return true;
}

}  // namespace detail
}  // namespace lockmem
