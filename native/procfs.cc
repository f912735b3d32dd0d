#include "procfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>

namespace lockmem {
namespace procfs {

std::string readFile(const char* path) {
  std::string text;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return text;
}

uint64_t statusHex(const std::string& text, const char* key) {
  size_t at = text.find(key);
  return at == std::string::npos ? 0 : strtoull(text.c_str() + at + strlen(key), nullptr, 16);
}

static std::string taskFile(pid_t pid, pid_t tid, const char* file) {
  char path[96];
  if (tid == 0) {
    snprintf(path, sizeof(path), "/proc/%d/%s", pid, file);
  } else {
    snprintf(path, sizeof(path), "/proc/%d/task/%d/%s", pid, tid, file);
  }
  return readFile(path);
}

char state(pid_t pid, pid_t tid) {
  std::string text = taskFile(pid, tid, "stat");
  // The command name may hold ") ": the state follows the last one.
  size_t close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() ? '?' : text[close + 2];
}

std::vector<pid_t> threadIds(pid_t pid) {
  std::vector<pid_t> tids;
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/task", pid);
  DIR* dir = opendir(path);
  if (!dir) return tids;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') tids.push_back(static_cast<pid_t>(atoi(e->d_name)));
  }
  closedir(dir);
  return tids;
}

long threadSyscall(pid_t pid, pid_t tid) {
  std::string text = taskFile(pid, tid, "syscall");
  if (text.empty() || text[0] == 'r') return kUnknown;
  char* end = nullptr;
  long nr = strtol(text.c_str(), &end, 10);
  if (end == text.c_str()) return kUnknown;
  return nr < 0 ? kNotInSyscall : nr;
}

uint64_t threadPc(pid_t pid, pid_t tid) {
  std::string text = taskFile(pid, tid, "syscall");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  size_t space = text.rfind(' ');
  if (text.empty() || text[0] == 'r' || space == std::string::npos) return 0;
  return strtoull(text.c_str() + space + 1, nullptr, 16);
}

bool blockedCall(pid_t pid, pid_t tid, BlockedCall* out) {
  std::string text = taskFile(pid, tid, "syscall");
  if (text.empty() || text[0] == 'r') return false;
  BlockedCall c;
  // "nr 0xa0 0xa1 0xa2 0xa3 0xa4 0xa5 0xsp 0xpc" (lib/syscall.c, fs/proc/base.c).
  int n = sscanf(text.c_str(), "%ld %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64,
                 &c.nr, &c.args[0], &c.args[1], &c.args[2], &c.args[3], &c.args[4], &c.args[5], &c.sp, &c.pc);
  if (n != 9 || c.nr < 0) return false;
  *out = c;
  return true;
}

SignalState signalState(pid_t pid, pid_t tid) {
  SignalState st;
  std::string text = taskFile(pid, tid, "status");
  if (text.find("\nSigCgt:") == std::string::npos) return st;
  st.known = true;
  st.sharedPending = statusHex(text, "\nShdPnd:");
  st.pending = statusHex(text, "\nSigPnd:") | st.sharedPending;
  st.blocked = statusHex(text, "\nSigBlk:");
  st.caught = statusHex(text, "\nSigCgt:");
  return st;
}

pid_t tracerPid(pid_t pid, pid_t tid) {
  std::string text = taskFile(pid, tid, "status");
  size_t at = text.find("\nTracerPid:");
  if (at == std::string::npos) return -1;
  return static_cast<pid_t>(strtol(text.c_str() + at + 11, nullptr, 10));
}

}  // namespace procfs
}  // namespace lockmem
