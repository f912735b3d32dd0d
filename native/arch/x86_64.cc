// x86_64: `syscall` is 0f 05; rax holds the number and the return value, orig_rax the
// number of the syscall the thread is in (-1 outside one); arguments in rdi, rsi, rdx,
// r10, r8, r9.
#include "arch.h"

#include <errno.h>

#include <linux/audit.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

namespace lockmem {
namespace arch {

namespace {
// User code segment selector of a 64-bit task (__USER_CS); compat tasks use 0x23.
constexpr unsigned long kUserCs64 = 0x33;
}  // namespace

const char* name() { return "x86_64"; }

uint32_t auditArch() { return AUDIT_ARCH_X86_64; }

long nrMlock2() { return SYS_mlock2; }
long nrMunlock() { return SYS_munlock; }
long nrMlockall() { return SYS_mlockall; }
long nrMunlockall() { return SYS_munlockall; }

bool getRegs(pid_t tid, Regs* regs) {
  return ptrace(PTRACE_GETREGS, tid, nullptr, &regs->r) == 0;
}

bool setRegs(pid_t tid, const Regs& regs) {
  return ptrace(PTRACE_SETREGS, tid, nullptr, &regs.r) == 0;
}

// x86_64 keeps orig_rax (number) and every argument register through the stop.
// The stop shows orig_rax and the arguments: nothing to remember.
void rememberBlockedCall(pid_t, pid_t) {}
void forgetBlockedCalls() {}
std::vector<procfs::ThreadCall> rememberedCalls() { return {}; }
void seedBlockedCalls(const std::vector<procfs::ThreadCall>&) {}
bool remembersCall(pid_t) { return false; }
// The stop shows rax = -ERESTART* and orig_rax itself: the signal path decides on them.
bool beforeRestartFixup(pid_t, const Regs&, Regs*, uint64_t*) { return false; }

bool isNativeAbi(const Regs& regs) { return regs.r.cs == kUserCs64; }

long findSyscallInstruction(const uint8_t* code, size_t len) {
  for (size_t i = 0; i + 1 < len; i++) {
    if (code[i] == 0x0f && code[i + 1] == 0x05) return static_cast<long>(i);
  }
  return -1;
}

size_t syscallInstructionLength() { return 2; }

bool isSyscallInstruction(const uint8_t* bytes) { return bytes[0] == 0x0f && bytes[1] == 0x05; }

Regs prepareSyscall(const Regs& base, uint64_t insnAddr, long nr, const uint64_t args[6]) {
  Regs regs = base;
  regs.r.rip = insnAddr;
  regs.r.rax = static_cast<unsigned long>(nr);
  regs.r.orig_rax = static_cast<unsigned long>(-1L);
  regs.r.rdi = args[0];
  regs.r.rsi = args[1];
  regs.r.rdx = args[2];
  regs.r.r10 = args[3];
  regs.r.r8 = args[4];
  regs.r.r9 = args[5];
  return regs;
}

// arch/x86/entry: rax holds -ENOSYS at the entry stop, the result at the exit stop.
bool atSyscallEntry(const Regs& regs) { return static_cast<int64_t>(regs.r.rax) == -ENOSYS; }

int64_t syscallReturn(const Regs& regs) { return static_cast<int64_t>(regs.r.rax); }

uint64_t pc(const Regs& regs) { return regs.r.rip; }

long currentSyscall(const Regs& regs) { return static_cast<long>(regs.r.orig_rax); }

int64_t returnValue(const Regs& regs) { return static_cast<int64_t>(regs.r.rax); }

Regs cancelSyscall(const Regs& regs) {
  Regs out = regs;
  out.r.orig_rax = static_cast<unsigned long>(-1L);
  return out;
}

bool inTemporarySigmask(const Regs& regs) {
  if (static_cast<int64_t>(regs.r.rax) >= 0) return false;  // succeeded: the mask is back
  return installsTemporaryMask(static_cast<long>(regs.r.orig_rax), regs.r.r10, regs.r.r8);
}

Regs rearmSyscall(const Regs& regs) {
  Regs out = regs;
  out.r.rip -= syscallInstructionLength();
  out.r.rax = out.r.orig_rax;
  return out;
}

// arch/x86/kernel/signal.c, arch_do_signal_or_restart() with no handler to run.
Regs restartSyscall(const Regs& regs) {
  Regs out = rearmSyscall(regs);
  if (static_cast<long>(regs.r.rax) == -516 /* ERESTART_RESTARTBLOCK */) out.r.rax = SYS_restart_syscall;
  return out;
}

}  // namespace arch
}  // namespace lockmem
