// Runs a batch of system calls inside another process through ptrace, leaving no trace:
// the thread's registers are restored exactly, signals that arrive meanwhile are
// delivered, and a call the thread was blocked in resumes as if nothing happened.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <string>
#include <vector>

namespace lockmem {

struct Syscall {
  long nr = -1;
  uint64_t args[6] = {0, 0, 0, 0, 0, 0};
};

struct BatchOp {
  Syscall call;
  bool hasUndo = false;
  Syscall undo;
};

struct SyscallOutcome {
  int64_t ret = 0;
  int err = 0;  // errno returned by the call, 0 on success
  uint64_t ns = 0;
};

struct BatchSpec {
  pid_t pid = 0;
  pid_t tid = 0;
  uint64_t vdsoStart = 0;
  uint64_t vdsoEnd = 0;
  std::vector<BatchOp> ops;
  bool stopOnError = true;
};

struct BatchOutcome {
  std::vector<SyscallOutcome> results;
  std::vector<SyscallOutcome> undoResults;
  uint64_t pauseNs = 0;
  bool rearmed = false;
  int signalsDelivered = 0;
  bool wasStopped = false;
};

// Where it failed and why. `stage` is one of attach, interrupt, getregs, inject,
// restore, detach, arch.
struct InjectError {
  int err = 0;
  std::string stage;
  std::string message;
};

// Returns false and fills `error` when the batch could not be run (the target is then
// left exactly as it was, or it has exited on its own). A call that fails inside the
// target is not an InjectError: it is reported in its SyscallOutcome.
bool runBatch(const BatchSpec& spec, BatchOutcome* outcome, InjectError* error);

}  // namespace lockmem
