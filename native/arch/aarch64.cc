// aarch64: `svc #0` is 0xd4000001 (little-endian 01 00 00 d4); x8 holds the number, x0-x5
// the arguments, x0 the return value. Registers come through PTRACE_GETREGSET NT_PRSTATUS
// (struct user_pt_regs), the kernel's syscallno through NT_ARM_SYSTEM_CALL.
//
// How the kernel restarts calls on arm64, and what that means for us (arch/arm64/kernel/
// signal.c do_signal(), ptrace.c, syscall.c; checked against the source, not copied):
//
// - On svc, el0_svc saves x0 in pt_regs->orig_x0 and x8 in syscallno; the return value
//   overwrites x0. orig_x0 is in no ptrace register set.
// - do_signal() runs BEFORE any ptrace signal-path stop. If the thread came from a call
//   (syscallno >= 0), it first forgets the call (syscallno = NO_SYSCALL, -1), and for
//   -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND/-ERESTART_RESTARTBLOCK already puts x0 =
//   orig_x0 and pc back onto the svc ("so that a debugger will see the already changed
//   PC"). Only then get_signal() stops the thread (group stop, PTRACE_INTERRUPT trap,
//   signal-delivery stop). After get_signal() returns with no handler to run, and only if
//   pc is still the restart address, a RESTARTBLOCK call gets x8 = __NR_restart_syscall.
// - So, unlike x86_64 (orig_rax and rax = -ERESTART* still visible at the stop, the fixup
//   applied after it), at every stop where we save registers on arm64:
//   * a call the kernel restarts already reads as "about to be re-issued": pc on the svc,
//     x0..x5 and x8 its arguments and number, syscallno -1. Putting these registers back
//     re-issues it; nothing to apply (restartSyscall() is not reached from such a stop).
//     Except for a RESTARTBLOCK call: the kernel would set x8 = __NR_restart_syscall only
//     after the stop, and only while pc is still the restart address, which our injection
//     changes; put back as they were, the registers re-issue the original call, whose
//     relative timeout then starts again in full. Which calls those are follows from the
//     call and its arguments alone (restartCode()), and the stop shows whether
//     the kernel rewound that very call (rewoundForRestart(): the remembered call, pc one
//     svc back, x0..x5 its arguments): then the saved x8 is __NR_restart_syscall, as the
//     kernel would have made it, and the call resumes with the time it had left (its
//     restart_block is the thread's own; our mlock calls do not touch it).
//     The fixup also assumed that no handler runs. When one is to run (a caught signal
//     pending as we let the thread go), the kernel would have decided again after the
//     stop: EINTR for ERESTARTNOHAND and RESTARTBLOCK, and for ERESTARTSYS without
//     SA_RESTART. Put back rewound, the call is restarted after the handler instead, and a
//     program that relies on a signal to break a blocking read never sees its EINTR.
//     beforeRestartFixup() recreates the state before the fixup (pc after the svc, x0 =
//     the call's ERESTART* code, syscallno = the call) for the calls whose code is known
//     (restartCode()), and the session sends the thread through the signal path with it
//     (Session::undoRestartFixup()); the fixup restores x0 from the kernel's orig_x0, the
//     x0 of the thread's last svc, which the session makes the call's first argument.
//   * a call that returned -EINTR (epoll_pwait and the others of signal(7)) shows x0 =
//     -EINTR, pc after the svc, syscallno -1, and /proc/TID/syscall prints "-1 sp pc"
//     (lib/syscall.c prints the arguments only while syscallno != -1). Neither the call nor
//     its first argument can be read back at the stop. Both can be read BEFORE the stop,
//     while the thread is still blocked in the call: /proc/TID/syscall prints the number
//     and syscall_get_arguments(), whose first one is orig_x0. rememberBlockedCall() reads
//     that line when the thread is seized (seizing stops nothing), and getRegs() accepts it
//     only when the stop matches it: x0 == -EINTR, x8 == its number, pc and sp equal, and
//     x1..x5 equal its other arguments (the kernel leaves x1..x30 alone on return). Then
//     rearmSyscall() puts pc back onto the svc and x0 = orig_x0. A thread that leaves the
//     call and enters the same call site with only x0 changed in the few microseconds
//     between that read and the stop would be re-armed with the old x0; every other case
//     (another call, another stack, other arguments) is refused and the EINTR reaches the
//     program as it would without us. A thread that entered its call after we looked
//     (not remembered) is not re-armed. A run that dies after its SIGSTOP leaves
//     the calls to a later run, which never saw them blocked: the remembered lines go into
//     the crash journal before the SIGSTOP (the optional calls= line, native/journal.h),
//     and the recovery seeds them back (seedBlockedCalls()) under the same matching rule.
//   Seen in Debian bookworm's 6.1 arm64 kernel (tests/guest/arm64.test.ts): blocked,
//   "22 0x5 0xffffc1e083d0 0x1 0xffffffffffffffff 0x0 0x8 0xffffc1e08380 0x427714"; at the
//   group stop, "-1 0xffffc1e08380 0x427714". An event loop in epoll_pwait saw EINTR in 10
//   of 10 sessions without the remembered call, in none with it.
// - Setting syscallno = -1 (NT_ARM_SYSTEM_CALL) in our injected state is the x86_64
//   "orig_rax = -1": do_signal() then treats the thread as not in a call and applies no
//   restart fixup to our registers. At a syscall-entry stop it makes the kernel skip the
//   call (syscall_trace_enter() returns NO_SYSCALL).
// - At syscall stops the kernel replaces x7 with the direction (0 entry, 1 exit) and
//   restores the thread's x7 after the stop, discarding a tracer's write: x7 tells entry
//   from exit, and the x7 we read there is never put back.
#include "arch.h"

#include <elf.h>
#include <errno.h>
#include <linux/audit.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cstring>
#include <vector>

#include "../procfs.h"

namespace lockmem {
namespace arch {

namespace {

constexpr uint32_t kSvc0 = 0xd4000001;
constexpr size_t kInsnLen = 4;
// PSR_MODE32_BIT: set in pstate for a 32-bit (compat) task.
constexpr uint64_t kPsrMode32 = 0x10;
// include/linux/errno.h, kernel-internal.
constexpr int64_t kERestartSys = -512;
constexpr int64_t kERestartNoHand = -514;
constexpr int64_t kERestartRestartBlock = -516;
// ptrace.c: x7 at a syscall stop.
constexpr uint64_t kSyscallEnter = 0;

// The tracer's sessions run on one OS thread each (ptrace is per thread).
thread_local std::vector<procfs::ThreadCall> remembered;

const procfs::BlockedCall* rememberedFor(pid_t tid) {
  for (const procfs::ThreadCall& r : remembered) {
    if (r.tid == tid) return &r.call;
  }
  return nullptr;
}

// The stop shows the remembered call ended with EINTR and nothing else moved.
bool endedWithEintr(const Regs& regs, const procfs::BlockedCall& c) {
  if (regs.syscallno != -1 || static_cast<int64_t>(regs.r.regs[0]) != -EINTR) return false;
  if (static_cast<long>(regs.r.regs[8]) != c.nr || regs.r.pc != c.pc || regs.r.sp != c.sp) return false;
  for (int i = 1; i < 6; i++) {
    if (regs.r.regs[i] != c.args[i]) return false;
  }
  return true;
}

// The stop shows the remembered call rewound by do_signal() for a restart: pc back on its
// svc, x0 = orig_x0 again, and nothing else moved.
bool rewoundForRestart(const Regs& regs, const procfs::BlockedCall& c) {
  if (regs.syscallno != -1 || regs.r.pc != c.pc - kInsnLen || regs.r.sp != c.sp) return false;
  if (static_cast<long>(regs.r.regs[8]) != c.nr) return false;
  for (int i = 0; i < 6; i++) {
    if (regs.r.regs[i] != c.args[i]) return false;
  }
  return true;
}

// The ERESTART* code call `c` returns when a signal interrupts it, for the calls where
// the call and its arguments alone decide it; 0 for the others. RESTARTBLOCK sets
// current->restart_block: kernel/time/hrtimer.c hrtimer_nanosleep() and the posix clocks'
// nsleep for relative sleeps (absolute ones: ERESTARTNOHAND), kernel/futex futex_wait()
// with a timeout (without: ERESTARTSYS), and restart_syscall itself for all of those.
// read/write and the waits of a pipe, tty, socket without a timeout, eventfd or child
// return ERESTARTSYS. Left out (0): ppoll, pselect6 and rt_sigsuspend (ERESTARTNOHAND with
// a temporary signal mask in play) and everything else.
int64_t restartCode(const procfs::BlockedCall& c) {
  constexpr uint64_t kTimerAbstime = 1;  // TIMER_ABSTIME
  constexpr uint64_t kFutexCmdMask = ~static_cast<uint64_t>(128 | 256);  // ~(PRIVATE | CLOCK_REALTIME)
  constexpr uint64_t kFutexWait = 0, kFutexWaitBitset = 9;
  switch (c.nr) {
    case SYS_nanosleep:
    case SYS_restart_syscall:
      return kERestartRestartBlock;
    case SYS_clock_nanosleep:
      return (c.args[1] & kTimerAbstime) ? kERestartNoHand : kERestartRestartBlock;
    case SYS_futex: {
      uint64_t cmd = c.args[1] & kFutexCmdMask;
      if (cmd != kFutexWait && cmd != kFutexWaitBitset) return 0;
      return c.args[3] != 0 ? kERestartRestartBlock : kERestartSys;
    }
    case SYS_read:
    case SYS_write:
    case SYS_readv:
    case SYS_writev:
    case SYS_pread64:
    case SYS_pwrite64:
    case SYS_wait4:
    case SYS_waitid:
    case SYS_accept:
    case SYS_accept4:
    case SYS_connect:
    case SYS_recvfrom:
    case SYS_recvmsg:
    case SYS_sendto:
    case SYS_sendmsg:
      return kERestartSys;
    default:
      return 0;
  }
}

}  // namespace

const char* name() { return "aarch64"; }

uint32_t auditArch() { return AUDIT_ARCH_AARCH64; }

// include/uapi/asm-generic/unistd.h (arm64 uses the generic table).
long nrMlock2() { return SYS_mlock2; }
long nrMunlock() { return SYS_munlock; }
long nrMlockall() { return SYS_mlockall; }
long nrMunlockall() { return SYS_munlockall; }

void rememberBlockedCall(pid_t pid, pid_t tid) {
  procfs::BlockedCall c;
  if (!procfs::blockedCall(pid, tid, &c)) return;
  for (procfs::ThreadCall& r : remembered) {
    if (r.tid == tid) {
      r.call = c;
      return;
    }
  }
  remembered.push_back({tid, c});
}

void forgetBlockedCalls() { remembered.clear(); }

std::vector<procfs::ThreadCall> rememberedCalls() { return remembered; }

// From a dead run's journal: the same evidence it had, read before its stop. getRegs()
// still accepts one only when the stop matches it exactly (endedWithEintr()).
void seedBlockedCalls(const std::vector<procfs::ThreadCall>& calls) { remembered = calls; }

bool remembersCall(pid_t tid) { return rememberedFor(tid) != nullptr; }

bool getRegs(pid_t tid, Regs* regs) {
  Regs out{};
  iovec gp{&out.r, sizeof(out.r)};
  if (ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_PRSTATUS), &gp) != 0) return false;
  int nr = -1;
  iovec sc{&nr, sizeof(nr)};
  if (ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_ARM_SYSTEM_CALL), &sc) != 0) return false;
  out.syscallno = nr;
  out.interruptedNr = -1;
  const procfs::BlockedCall* c = rememberedFor(tid);
  if (c && endedWithEintr(out, *c)) {
    out.interruptedNr = c->nr;
    out.origX0 = c->args[0];
  }
  // What the kernel would have resumed it with (see the top): restart_syscall.
  if (c && rewoundForRestart(out, *c) && restartCode(*c) == kERestartRestartBlock) out.r.regs[8] = SYS_restart_syscall;
  *regs = out;
  return true;
}

bool setRegs(pid_t tid, const Regs& regs) {
  iovec gp{const_cast<user_pt_regs*>(&regs.r), sizeof(regs.r)};
  if (ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(NT_PRSTATUS), &gp) != 0) return false;
  int nr = static_cast<int>(regs.syscallno);
  iovec sc{&nr, sizeof(nr)};
  return ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(NT_ARM_SYSTEM_CALL), &sc) == 0;
}

bool isNativeAbi(const Regs& regs) { return (regs.r.pstate & kPsrMode32) == 0; }

long findSyscallInstruction(const uint8_t* code, size_t len) {
  for (size_t i = 0; i + kInsnLen <= len; i += kInsnLen) {
    if (isSyscallInstruction(code + i)) return static_cast<long>(i);
  }
  return -1;
}

size_t syscallInstructionLength() { return kInsnLen; }

bool isSyscallInstruction(const uint8_t* bytes) {
  uint32_t insn = static_cast<uint32_t>(bytes[0]) | static_cast<uint32_t>(bytes[1]) << 8 |
                  static_cast<uint32_t>(bytes[2]) << 16 | static_cast<uint32_t>(bytes[3]) << 24;
  return insn == kSvc0;
}

Regs prepareSyscall(const Regs& base, uint64_t insnAddr, long nr, const uint64_t args[6]) {
  Regs regs = base;
  regs.r.pc = insnAddr;
  regs.r.regs[8] = static_cast<uint64_t>(nr);
  for (int i = 0; i < 6; i++) regs.r.regs[i] = args[i];
  regs.syscallno = -1;
  return regs;
}

bool atSyscallEntry(const Regs& regs) { return regs.syscallno >= 0 && regs.r.regs[7] == kSyscallEnter; }

int64_t syscallReturn(const Regs& regs) { return static_cast<int64_t>(regs.r.regs[0]); }

uint64_t pc(const Regs& regs) { return regs.r.pc; }

// At our own syscall stops the kernel's number; at a signal-path stop only a remembered
// call that ended with EINTR (the kernel forgot the call before stopping).
long currentSyscall(const Regs& regs) {
  return regs.syscallno >= 0 ? static_cast<long>(regs.syscallno) : static_cast<long>(regs.interruptedNr);
}

int64_t returnValue(const Regs& regs) { return static_cast<int64_t>(regs.r.regs[0]); }

Regs cancelSyscall(const Regs& regs) {
  Regs out = regs;
  out.syscallno = -1;
  return out;
}

bool inTemporarySigmask(const Regs& regs) {
  if (currentSyscall(regs) < 0 || returnValue(regs) >= 0) return false;
  return installsTemporaryMask(currentSyscall(regs), regs.r.regs[3], regs.r.regs[4]);
}

// Only called when currentSyscall() >= 0: a remembered call (x0 from orig_x0) at a
// signal-path stop.
Regs rearmSyscall(const Regs& regs) {
  Regs out = regs;
  out.r.pc -= kInsnLen;
  out.r.regs[8] = static_cast<uint64_t>(currentSyscall(regs));
  if (regs.interruptedNr >= 0) out.r.regs[0] = regs.origX0;
  out.syscallno = -1;
  out.interruptedNr = -1;
  return out;
}

// Saved registers that show `tid`'s remembered call rewound for a restart, turned back into
// what the kernel had before its fixup (see the top), for the signal path to decide again
// with a handler to run.
bool beforeRestartFixup(pid_t tid, const Regs& saved, Regs* out, uint64_t* firstArg) {
  const procfs::BlockedCall* c = rememberedFor(tid);
  if (!c) return false;
  Regs rewound = saved;
  rewound.r.regs[8] = static_cast<uint64_t>(c->nr);  // getRegs() may have made it restart_syscall
  int64_t code = restartCode(*c);
  if (!rewoundForRestart(rewound, *c) || code == 0) return false;
  Regs before = rewound;
  before.r.pc = c->pc;
  before.r.regs[0] = static_cast<uint64_t>(code);
  before.syscallno = c->nr;
  *out = before;
  *firstArg = c->args[0];
  return true;
}

// The restart rule as do_signal() applies it with no handler. Reached only from a
// syscall-exit stop that shows an ERESTART* code, which our own calls (mlock family)
// never return; signal-path stops already show the rule applied (see the top).
Regs restartSyscall(const Regs& regs) {
  Regs out = rearmSyscall(regs);
  if (static_cast<int64_t>(regs.r.regs[0]) == kERestartRestartBlock) out.r.regs[8] = SYS_restart_syscall;
  return out;
}

}  // namespace arch
}  // namespace lockmem
