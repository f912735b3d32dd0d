// One injection session: the state machine that runBatch() and recoverSession() run. The
// design (why syscall stops, why the signals are blocked, how restarts are handled) is at
// the top of inject.cc; read DESIGN.md ("Kernel facts") first. The phases are at `Phase`
// below. The methods are defined by concern:
//   session.cc          the main sequence: hold, inject, release, cleanup
//   session_errors.cc   how a failure is recorded
//   session_regs.cc     attach, the thread's registers and signal mask
//   session_hold.cc     the hold (our group stop), whose SIGSTOP it was
//   session_stops.cc    waiting for stops, resuming
//   session_calls.cc    the [vdso] syscall instruction, seccomp, running each call
//   session_restore.cc  putting the thread's registers back and detaching
#pragma once

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "arch.h"
#include "inject.h"
#include "clock.h"
#include "group_stop.h"
#include "journal.h"
#include "procfs.h"
#include "stopsig.h"
#include "waiters.h"

namespace lockmem {
namespace detail {

using lockmem::kStopSignals;
using lockmem::nowNs;
using lockmem::sigbit;
bool isStopSignal(int sig);
// One of the kernel's ERESTART* codes (session.cc).
bool isRestartCode(int64_t v);

// What waitpid reported.
enum class StopKind { Exited, SyscallStop, SignalDelivery, EventStop };

struct Stop {
  StopKind kind = StopKind::Exited;
  int sig = 0;
};

// How far the session got, which is what decides what must be undone (the models:
// reptyr's ptrace_child, CRIU compel's infect.c). One phase at a time, and only these
// transitions:
//
//   phase      entered                                         undone by
//   Start      constructed                                     (nothing to undo)
//   Journaled  crash journal begun (recovering: the dead run's) release(): journal removed
//   Seized     PTRACE_SEIZE (recovering: after Journaled)      cleanup(): detach
//   Held       stopped in the signal path, our group stop in   cleanup(): detach
//              effect: nothing of the thread changed yet
//   Saved      its own registers read (recovering: the         restoreAndDetach(): registers
//              journaled ones), then journaled; our calls      put back (and an EINTR of ours
//              may run from here on                            re-issued), detach
//   Blocked    its signals blocked, its own mask journaled     restoreSignalMask()
//              (skipped without a journal, or before Linux 5.2
//              in a temporary mask)
//   Restored   own registers and mask back (Saved/Blocked ->)  detach()
//   Detached   PTRACE_DETACH (Seized/Held/Restored ->)         release(): SIGCONT
//   Gone       the thread or process exited (any attached ->)  (nothing to undo)
//
// Which ptrace stop the thread is in (`Where`) is a separate, faster-changing fact: it
// changes with every resume and stop within one phase, and it is meaningful only from
// Seized until Detached.
enum class Phase { Start, Journaled, Seized, Held, Saved, Blocked, Restored, Detached, Gone };

// Where the attached thread is, which decides how it may be resumed and detached.
enum class Where {
  Running,       // seized (or resumed) and not yet stopped
  SignalPath,    // stopped inside get_signal(): interrupt, group stop, or signal delivery
  SyscallEntry,  // stopped at the entry of one of our calls
  SyscallExit,   // stopped at the exit of one of our calls
};

// What the session has observed about the process, as opposed to what it did: these
// decide whether the process is continued at the end (release()).
struct Facts {
  // The process was stopped before we came (recovering: before the dead run came, or
  // someone else stopped it meanwhile): it is left stopped.
  bool wasStopped = false;
  // The group stop reached our thread (an event stop for a stop signal).
  bool groupStopped = false;
  // Our own SIGSTOP (stopsig.h) was dequeued.
  bool ownStopSeen = false;
  // Someone else's stop signal was taken or seen pending: the process stays stopped.
  bool foreignStop = false;
};

class Session {
 public:
  // `recovery`: finish the session of a run that died (recoverSession()); nullptr for a
  // fresh one.
  Session(const BatchSpec& spec, const Recovery* recovery, BatchOutcome* out, InjectError* error);

  bool run();

 private:
  // session.cc: the main sequence and its steps.
  bool hold();
  bool inject();
  void release();
  bool cleanup();
  bool cleanup(bool) { return cleanup(); }
  bool attached() const { return phase_ != Phase::Start && phase_ != Phase::Journaled && phase_ != Phase::Detached && phase_ != Phase::Gone; }
  bool registersSaved() const { return phase_ == Phase::Saved || phase_ == Phase::Blocked || phase_ == Phase::Restored; }
  // The journal describes this session: it began it, or it is the one being recovered.
  bool journalOwned() const { return journal_.enabled() && phase_ != Phase::Start; }

  // session_errors.cc: errors.
  bool fail(Stage stage, int err, const std::string& message);
  bool failed() const { return error_->failed; }
  bool failErrno(Stage stage, const char* what);
  bool failGone(Stage stage);

  // session_regs.cc: attach, registers, signal mask.
  bool attach();
  bool useJournaledRegisters();
  bool setRegs(const arch::Regs& regs, Stage stage);
  bool saveRegisters();
  bool deferSignals();
  static bool kernelAtLeast(int major, int minor);
  bool restoreSignalMask();
  // While we block its signals, what counts is the thread's own mask.
  uint64_t blockedSignals(const procfs::SignalState& st) const { return phase_ == Phase::Blocked ? *ownMask_ : st.blocked; }

  char processState() { return procfs::state(spec_.pid); }
  procfs::SignalState readSignalState() { return procfs::signalState(spec_.pid, tid_); }

  // session_hold.cc: the hold (our group stop) and whose SIGSTOP it was.
  bool waitForHold();
  bool passOnDuringHold(const Stop& stop);
  bool holdRefused();
  bool foreignStopPending();
  void classifyStop();
  void classifyStop(const siginfo_t& info);
  void noteForeignStop();

  // session_stops.cc: waiting for stops, resuming.
  bool waitStop(Stop* stop);
  bool waitStopFor(Stop* stop, uint64_t until);
  bool classifyStatus(int status, Stop* stop);
  bool waitForSignalPathStop(Stage stage);
  bool resume(enum __ptrace_request how, int sig, Stage stage);

  // session_calls.cc: what our calls run from, whether they are allowed, and running them.
  bool findSyscallInstruction();
  bool checkSeccomp();
  // Whether the thread's seccomp filters allow this call (true without filters, false when they cannot be read).
  bool seccompAllowsCall(const Syscall& call);
  bool undoRestartFixup(arch::Regs* final, bool* viaSignalPath);
  bool runCall(const Syscall& call, SyscallOutcome* res);
  bool finishCall(const Syscall& call, SyscallOutcome* res);
  bool recordResult(const arch::Regs& after, uint64_t ns, SyscallOutcome* res);
  bool deliverSignal(int sig);
  bool undoBefore(size_t failed);

  // session_restore.cc: putting the thread back and detaching.
  arch::Regs finalRegisters();
  bool signalInterrupts(int sig);
  bool restoreAndDetach();
  bool caughtSignalPending();
  bool detach();
  bool leaveSyscallEntry();

  const BatchSpec& spec_;
  const Recovery* recovery_;
  BatchOutcome* out_;
  InjectError* error_;
  pid_t tid_;
  Phase phase_ = Phase::Start;
  Where where_ = Where::Running;
  Facts facts_;
  arch::Regs saved_{};
  // The thread's own signal mask, set when it enters Blocked (and kept: detach() counts the
  // signals our mask kept pending).
  std::optional<uint64_t> ownMask_;
  Journal journal_;
  OwnStop ownStop_;
  OtherThreads others_;
  uint64_t insnAddr_ = 0;
  uint64_t pauseStart_ = 0;
};

}  // namespace detail
}  // namespace lockmem
