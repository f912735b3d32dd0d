// The /proc reads the injector makes while a target is held: plain read(2) calls, no
// stream machinery, nothing that allocates more than one small string.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <string>
#include <vector>

namespace lockmem {
namespace procfs {

// The whole file, or "" when it cannot be read.
std::string readFile(const char* path);

// The hex value after `key` (e.g. "\nSigPnd:") in a /proc status text, 0 when absent.
uint64_t statusHex(const std::string& text, const char* key);

// One letter from /proc/PID/stat (tid == 0) or /proc/PID/task/TID/stat; '?' when gone.
char state(pid_t pid, pid_t tid = 0);

// Thread ids of pid now.
std::vector<pid_t> threadIds(pid_t pid);

// What /proc/PID/task/TID/syscall says: the syscall number the thread is blocked in,
// kNotInSyscall ("-1 ...": stopped or preempted in user space), or kUnknown ("running":
// on a CPU, or unreadable).
constexpr long kNotInSyscall = -1;
constexpr long kUnknown = -2;
long threadSyscall(pid_t pid, pid_t tid);
// The user pc in that file (its last field), 0 when not shown.
uint64_t threadPc(pid_t pid, pid_t tid);

// The whole line of that file for a thread blocked in a call: the number, the six
// arguments as the kernel's syscall_get_arguments() sees them (on arm64 the first is
// orig_x0, which no ptrace register set shows), the user sp and pc.
struct BlockedCall {
  long nr = kNotInSyscall;
  uint64_t args[6] = {0, 0, 0, 0, 0, 0};
  uint64_t sp = 0;
  uint64_t pc = 0;
};
// False when the thread is not blocked in a call (running, "-1 ...", or unreadable).
bool blockedCall(pid_t pid, pid_t tid, BlockedCall* out);
// One thread's call as it was seen blocked.
struct ThreadCall {
  pid_t tid = 0;
  BlockedCall call;
};

struct SignalState {
  bool known = false;
  uint64_t pending = 0;  // SigPnd | ShdPnd
  uint64_t sharedPending = 0;
  uint64_t blocked = 0;
  uint64_t caught = 0;
};
SignalState signalState(pid_t pid, pid_t tid);

// TracerPid of one thread: 0 when untraced, -1 when it cannot be read (gone).
pid_t tracerPid(pid_t pid, pid_t tid);

}  // namespace procfs
}  // namespace lockmem
