// The injection state machine. Read DESIGN.md ("Kernel facts") first.
//
// One session: seize one thread, interrupt it, save its registers, then for each call
// point the pc at a `syscall` instruction in the target's [vdso], resume with
// PTRACE_SYSCALL to the entry stop and again to the exit stop, and read the result.
// Finally put the saved registers back and detach.
//
// Why PTRACE_SYSCALL and not single-stepping: a single-step trap is raised with
// force_sig(SIGTRAP), which resets the target's SIGTRAP handler to SIG_DFL if the target
// blocks or ignores SIGTRAP. Syscall stops raise no signal.
//
// Signals: while our registers are in the thread, its signals are blocked
// (PTRACE_SETSIGMASK, the thread's own mask journaled first), so that one arriving
// meanwhile stays pending and is delivered with the thread's own registers once they
// are back. Taken mid-injection instead, it would stop the thread at a signal-delivery
// stop with our registers in place, and if lockmem died right then the kernel would
// drop the signal (waitpid cleared the stop's exit code). Only SIGSTOP and SIGKILL get
// through a mask. A thread stopped on its way out of a call that installed a temporary
// mask (ppoll, epoll_pwait, ...) is fine too: since Linux 5.2 PTRACE_GETSIGMASK returns
// the real mask the kernel was about to restore, and PTRACE_SETSIGMASK cancels that
// restore. On older kernels such a thread keeps its mask, and a signal that arrives is
// reported as a signal-delivery stop before our call starts, and is delivered right there
// with the thread's own registers put back; then we interrupt the thread again.
//
// Restart: when the thread was stopped inside a call, the kernel decides whether to
// restart it (ERESTART* codes) only on the signal-handling path. If our last stop was a
// syscall-exit stop, we go back to that path (PTRACE_INTERRUPT) before detaching.
// Calls that return EINTR on any stop (epoll_wait and the others in signal(7)) are
// re-issued instead, unless a real signal is pending that would interrupt them anyway.
#include "inject.h"

#include "session.h"

namespace lockmem {

bool runBatch(const BatchSpec& spec, BatchOutcome* outcome, InjectError* error) {
  detail::Session session(spec, nullptr, outcome, error);
  return session.run();
}

bool recoverSession(const BatchSpec& spec, const Recovery& recovery, BatchOutcome* outcome, InjectError* error) {
  detail::Session session(spec, &recovery, outcome, error);
  return session.run();
}

}  // namespace lockmem
