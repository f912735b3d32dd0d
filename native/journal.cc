#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace lockmem {

namespace {

bool writeAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// A new file is durable only once its directory entry is.
bool syncDirectoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = fsync(fd) == 0;
  close(fd);
  return ok;
}

}  // namespace

bool Journal::begin(pid_t pid, pid_t tid, bool wasStopped) {
  if (!enabled()) return true;
  int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::string text = "v=1\npid=" + std::to_string(pid) + "\ntid=" + std::to_string(tid) +
                     "\nwasStopped=" + (wasStopped ? "1" : "0") + "\n";
  bool ok = writeAll(fd, text) && fsync(fd) == 0;
  int saved = errno;
  close(fd);
  errno = saved;
  return ok && syncDirectoryOf(path_);
}

// No fsync here: these writes happen while the target is held, and the journal has to
// outlive this process, not the machine (a power loss ends the target too). A write()
// is in the page cache, which survives SIGKILL and the OOM killer; fsync on an ext4 /run
// would add milliseconds to the target's stall.
bool Journal::append(const std::string& text) {
  int fd = open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = writeAll(fd, text);
  int saved = errno;
  close(fd);
  errno = saved;
  return ok;
}

bool Journal::saveRegs(const arch::Regs& regs) {
  if (!enabled()) return true;
  static const char* hex = "0123456789abcdef";
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&regs);
  std::string text = "regs=";
  for (size_t i = 0; i < sizeof(regs); i++) {
    text += hex[bytes[i] >> 4];
    text += hex[bytes[i] & 15];
  }
  text += "\n";
  return append(text);
}

bool Journal::markRestored() {
  if (!enabled()) return true;
  return append("restored=1\n");
}

void Journal::remove() {
  if (enabled()) unlink(path_.c_str());
}

}  // namespace lockmem
