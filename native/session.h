// One injection session: the state machine that runBatch() runs. The design (why syscall
// stops, why the signals are blocked, how restarts are handled) is at the top of
// inject.cc; read DESIGN.md ("Kernel facts") first. The methods are defined by concern:
//   session.cc          the main sequence, release, errors, attach, registers, signal mask
//   session_stops.cc    waiting for stops, the hold (group stop), whose SIGSTOP it was
//   session_calls.cc    the [vdso] syscall instruction, seccomp, running each call
//   session_restore.cc  putting the thread's registers back and detaching
#pragma once

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "arch.h"
#include "inject.h"
#include "clock.h"
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

// Where the stopped thread is, which decides how it may be resumed and detached.
enum class Where {
  NotAttached,
  Running,       // seized (or resumed) and not yet stopped
  SignalPath,    // stopped inside get_signal(): interrupt, group stop, or signal delivery
  SyscallEntry,  // stopped at the entry of one of our calls
  SyscallExit,   // stopped at the exit of one of our calls
  Gone,          // the thread or process exited
};

class Session {
 public:
  Session(const BatchSpec& spec, BatchOutcome* out, InjectError* error);

  bool run();

 private:
  // session.cc: the main sequence and its steps.
  bool session();
  bool hold();
  bool inject();
  void release();
  bool cleanup();
  bool cleanup(bool) { return cleanup(); }

  // session.cc: errors.
  bool fail(const char* stage, int err, const std::string& message);
  bool failed() const { return !error_->stage.empty(); }
  bool failErrno(const char* stage, const char* what);
  bool failGone(const char* stage);

  // session.cc: attach, registers, signal mask.
  bool attach();
  bool useJournaledRegisters();
  bool setRegs(const arch::Regs& regs, const char* stage);
  bool saveRegisters();
  bool deferSignals();
  static bool kernelAtLeast(int major, int minor);
  bool restoreSignalMask();

  char processState() { return procfs::state(spec_.pid); }
  procfs::SignalState readSignalState() { return procfs::signalState(spec_.pid, tid_); }

  // session_stops.cc: waiting for stops and holding the process.
  bool waitForHold();
  bool holdRefused();
  bool waitStop(Stop* stop);
  bool waitStopFor(Stop* stop, uint64_t until);
  bool classifyStatus(int status, Stop* stop);
  bool waitForSignalPathStop(const char* stage);
  bool resume(enum __ptrace_request how, int sig, const char* stage);
  bool stopPending();
  bool anyThreadStopped();
  void waitUntilAllStopped();
  bool foreignStopPending();
  void classifyStop();
  void classifyStop(const siginfo_t& info);
  void noteForeignStop();

  // session_calls.cc: what our calls run from, whether they are allowed, and running them.
  bool findSyscallInstruction();
  bool checkSeccomp();
  bool runCall(const Syscall& call, SyscallOutcome* res);
  bool finishCall(const Syscall& call, SyscallOutcome* res);
  bool recordResult(const arch::Regs& after, uint64_t ns, SyscallOutcome* res);
  bool deliverSignal(int sig);
  bool undoBefore(size_t failed);

  // session_restore.cc: putting the thread back and detaching.
  arch::Regs finalRegisters();
  bool signalInterrupts(int sig);
  bool finish();
  bool restoreAndDetach();
  bool caughtSignalPending();
  bool detach();
  bool leaveSyscallEntry();

  const BatchSpec& spec_;
  BatchOutcome* out_;
  InjectError* error_;
  pid_t tid_;
  Where where_ = Where::NotAttached;
  arch::Regs saved_{};
  bool haveSaved_ = false;
  bool groupStopped_ = false;
  bool attached_ = false;
  bool wasStopped_ = false;
  bool ownStopSeen_ = false;
  bool foreignStop_ = false;
  bool journalWritten_ = false;
  bool signalsBlocked_ = false;
  bool signalsWereBlocked_ = false;
  uint64_t ownMask_ = 0;
  Journal journal_;
  OwnStop ownStop_;
  OtherThreads others_;
  uint64_t insnAddr_ = 0;
  uint64_t pauseStart_ = 0;
};

}  // namespace detail
}  // namespace lockmem
