// The crash journal of one injection: written (and fsynced) before the target is stopped
// and before any register is changed, so that a later run can put the target back if
// this process dies in the middle (DESIGN.md: "the tracer dies").
//
// Format, one "key=value" per line: v=2, pid, tid, wasStopped (0/1: whether the process
// was stopped before we came, i.e. whether to SIGCONT it afterwards), then, once saved,
// regs=<hex of the saved register block> (dashes until saved), sigmask=<16 hex digits of
// the thread's own signal mask> (dashes unless we blocked its signals), foreignStop=0, set
// to 1 once a stop signal from someone else was taken or seen pending during the session
// (the process must then stay stopped), and restored=0, set to restored=1 once registers
// and mask are back in place. v=1 journals have neither the sigmask nor the foreignStop line.
// Optional last line, appended before the SIGSTOP when there is anything to say (arm64):
// calls=<tid>:<nr>:<arg0>:...:<arg5>:<sp>:<pc>,... (tid and nr decimal, the rest hex), the
// calls threads were seen blocked in, which the stop hides on arm64 (native/arch/aarch64.cc).
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <string>

#include <vector>

#include "arch.h"
#include "procfs.h"

namespace lockmem {

class Journal {
 public:
  explicit Journal(std::string path) : path_(std::move(path)) {}
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  bool enabled() const { return !path_.empty(); }
  // False with errno set.
  bool begin(pid_t pid, pid_t tid, bool wasStopped);
  // Before the stop (the file may still grow then); nothing written for no calls.
  bool saveBlockedCalls(const std::vector<procfs::ThreadCall>& calls);
  bool saveRegs(const arch::Regs& regs);
  // False with errno = ENOTSUP for a journal without a sigmask line (an older run's).
  bool saveSigmask(uint64_t mask);
  // The thread has its own registers back: from here on a later run must never put
  // journaled registers into it again, only continue the process if needed.
  bool markRestored();
  // Someone else's stop signal arrived during the session: a later run must not continue
  // the process. False with errno = ENOTSUP for a journal without the line.
  bool markForeignStop();
  void remove();
  // A calls= value as saveBlockedCalls() writes it; false (and nothing in out) when it is not.
  static bool parseBlockedCalls(const std::string& text, std::vector<procfs::ThreadCall>* out);

 private:
  bool openExisting();
  bool writeAt(off_t offset, const std::string& text);
  std::string path_;
  // Kept open from begin() on, and written in place at fixed offsets (the file never
  // grows while the target is held): no open, no size change, no metadata update.
  int fd_ = -1;
  off_t regsAt_ = -1;
  off_t sigmaskAt_ = -1;
  off_t foreignStopAt_ = -1;
  off_t restoredAt_ = -1;
  off_t end_ = -1;
};

}  // namespace lockmem
