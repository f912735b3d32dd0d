// Architecture-specific part of the injector: register layout, the system call
// instruction, and the kernel's syscall-restart conventions. One implementation per
// architecture in this folder (x86_64.cc, aarch64.cc); binding.gyp compiles the one of
// target_arch.
#pragma once

#include <sys/types.h>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../procfs.h"

#if defined(__x86_64__)
#include <sys/user.h>
#elif defined(__aarch64__)
#include <asm/ptrace.h>
#endif

namespace lockmem {
namespace arch {

#if defined(__x86_64__)
struct Regs {
  user_regs_struct r;
};
#elif defined(__aarch64__)
struct Regs {
  user_pt_regs r;
  // NT_ARM_SYSTEM_CALL: the kernel's syscallno, -1 (NO_SYSCALL) outside a syscall stop.
  int64_t syscallno;
  // A call that ended with EINTR at this stop, known from the thread's /proc syscall line
  // read before the stop (rememberBlockedCall): its number and first argument (orig_x0),
  // which the stop itself no longer shows. -1 when none. See aarch64.cc.
  int64_t interruptedNr;
  uint64_t origX0;
};
#else
#error "lockmem's injector supports x86_64 and aarch64 only"
#endif

const char* name();
// AUDIT_ARCH_* of the native ABI, as seccomp filters see it.
uint32_t auditArch();

// System call numbers of the target architecture.
long nrMlock2();
long nrMunlock();
long nrMlockall();
long nrMunlockall();

// ptrace register access; return false with errno set.
bool getRegs(pid_t tid, Regs* regs);
bool setRegs(pid_t tid, const Regs& regs);

// Before a seized thread is stopped: note the call it is blocked in (its /proc syscall
// line), for architectures whose stop hides what a re-issue needs (aarch64: the first
// argument). Per OS thread of the tracer; forgetBlockedCalls() starts a session afresh.
void rememberBlockedCall(pid_t pid, pid_t tid);
void forgetBlockedCalls();
// What was remembered, for the crash journal (written before the stop), and what a later
// run (recovery of a dead one, which never saw the calls blocked) puts back from it.
std::vector<procfs::ThreadCall> rememberedCalls();
void seedBlockedCalls(const std::vector<procfs::ThreadCall>& calls);
// A call is remembered for this thread: its stop may hide an EINTR to re-issue.
bool remembersCall(pid_t tid);

// True when the stopped thread runs the native 64-bit ABI (not a compat 32-bit task).
bool isNativeAbi(const Regs& regs);

// Finds the system call instruction in a copy of the target's [vdso]; returns its
// offset in `code`, or -1.
long findSyscallInstruction(const uint8_t* code, size_t len);
// Length of that instruction (the kernel rewinds the pc by this much to restart).
size_t syscallInstructionLength();
// True when `bytes` (syscallInstructionLength() of them) are the syscall instruction.
bool isSyscallInstruction(const uint8_t* bytes);

// Registers that make the thread execute `nr(args...)` at `insnAddr`. The "current
// syscall" register is set to -1 so that the kernel never applies its restart fixup
// (pc -= insn length) to our injected state.
Regs prepareSyscall(const Regs& base, uint64_t insnAddr, long nr, const uint64_t args[6]);
// True at a syscall-entry stop (the kernel has not run the call yet).
bool atSyscallEntry(const Regs& regs);
// The raw return register after the syscall-exit stop.
int64_t syscallReturn(const Regs& regs);

uint64_t pc(const Regs& regs);
// The syscall the thread was in when it stopped, or -1 when it was not at a syscall exit.
long currentSyscall(const Regs& regs);
// The saved return value register (meaningful when currentSyscall() >= 0).
int64_t returnValue(const Regs& regs);
// Registers at a syscall-entry stop that make the kernel skip the call.
Regs cancelSyscall(const Regs& regs);
// True when the thread stopped on its way out of a call that installed a temporary
// signal mask (ppoll, pselect6, epoll_pwait, epoll_pwait2, rt_sigsuspend, io_pgetevents,
// io_uring_enter) and failed: the kernel puts the thread's own mask back only later, on
// the signal path (TIF_RESTORE_SIGMASK). Before Linux 5.2, PTRACE_GETSIGMASK read the
// temporary mask then, not the real one.
bool inTemporarySigmask(const Regs& regs);
// Shared by the per-arch files (common.cc, compiled with the target's syscall numbers):
// whether call `nr`, given its 4th and 5th arguments, installed a temporary mask. A null
// sigmask argument installs nothing (ppoll's is the 4th, epoll_pwait's the 5th); for the
// others the mask sits behind a pointer (or always, for rt_sigsuspend): assume one.
bool installsTemporaryMask(long nr, uint64_t arg4, uint64_t arg5);
// Re-issue the interrupted call on resume: pc back onto the syscall instruction and the
// syscall number back into the number register.
Regs rearmSyscall(const Regs& regs);
// aarch64: when `saved` (the registers of `tid` at our stop) shows its remembered call
// already rewound by the kernel's restart fixup, which assumed no handler would run: the
// registers from before that fixup (pc after the svc, x0 = the call's ERESTART* code,
// syscallno = the call), so that the signal path can decide again, as it would have, when a
// caught signal is to be delivered (EINTR, or the restart SA_RESTART asks for). The fixup
// puts orig_x0 back into x0 on a restart: `firstArg` is the value orig_x0 must hold then.
// False when there is nothing to undo or the call's code is not known (x86_64: always; its
// stop shows the code itself).
bool beforeRestartFixup(pid_t tid, const Regs& saved, Regs* out, uint64_t* firstArg);
// What the kernel's signal path does to a call that returned an ERESTART* code when no
// handler runs: the same call again, or restart_syscall(2) for ERESTART_RESTARTBLOCK.
Regs restartSyscall(const Regs& regs);

}  // namespace arch
}  // namespace lockmem
