#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cinttypes>
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

Journal::~Journal() {
  if (fd_ >= 0) close(fd_);
}

bool Journal::begin(pid_t pid, pid_t tid, bool wasStopped) {
  if (!enabled()) return true;
  // Written under a temporary name and renamed: a reader (recovery, under the target
  // lock) sees the whole file or none, never a torn one from a run killed mid-write.
  std::string tmp = path_ + ".tmp";
  fd_ = open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd_ < 0) return false;
  std::string text = "v=2\npid=" + std::to_string(pid) + "\ntid=" + std::to_string(tid) +
                     "\nwasStopped=" + (wasStopped ? "1" : "0") + "\nregs=";
  regsAt_ = static_cast<off_t>(text.size());
  text += std::string(2 * sizeof(arch::Regs), '-') + "\nsigmask=";
  sigmaskAt_ = static_cast<off_t>(text.size());
  text += std::string(16, '-') + "\nforeignStop=";
  foreignStopAt_ = static_cast<off_t>(text.size());
  text += "0\nrestored=";
  restoredAt_ = static_cast<off_t>(text.size());
  text += "0\n";
  end_ = static_cast<off_t>(text.size());
  // Before the target is stopped: durable, so that a later run knows whether to SIGCONT it.
  return writeAll(fd_, text) && fsync(fd_) == 0 && rename(tmp.c_str(), path_.c_str()) == 0 && syncDirectoryOf(path_);
}

// Recovery reuses the journal of the interrupted run: find its fields again.
bool Journal::openExisting() {
  fd_ = open(path_.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd_ < 0) return false;
  std::string text(4096, '\0');
  ssize_t n = pread(fd_, &text[0], text.size(), 0);
  if (n <= 0) return false;
  text.resize(static_cast<size_t>(n));
  size_t regs = text.find("\nregs=");
  size_t restored = text.find("\nrestored=");
  if (regs == std::string::npos || restored == std::string::npos) {
    errno = EINVAL;
    return false;
  }
  size_t sigmask = text.find("\nsigmask=");
  regsAt_ = static_cast<off_t>(regs + 6);
  sigmaskAt_ = sigmask == std::string::npos ? -1 : static_cast<off_t>(sigmask + 9);
  size_t foreign = text.find("\nforeignStop=");
  foreignStopAt_ = foreign == std::string::npos ? -1 : static_cast<off_t>(foreign + 13);
  restoredAt_ = static_cast<off_t>(restored + 10);
  return true;
}

// No fsync here: these writes happen while the target is held, and the journal has to
// outlive this process, not the machine (a power loss ends the target too). A write()
// is in the page cache, which survives SIGKILL and the OOM killer.
bool Journal::writeAt(off_t offset, const std::string& text) {
  if (fd_ < 0 && !openExisting()) return false;
  return pwrite(fd_, text.data(), text.size(), offset) == static_cast<ssize_t>(text.size());
}

bool Journal::saveBlockedCalls(const std::vector<procfs::ThreadCall>& calls) {
  if (!enabled() || calls.empty()) return true;
  if (fd_ < 0 || end_ < 0) {
    errno = EBADF;  // only the run that began the journal appends to it
    return false;
  }
  std::string text = "calls=";
  char field[32];
  for (size_t i = 0; i < calls.size(); i++) {
    const procfs::BlockedCall& c = calls[i].call;
    snprintf(field, sizeof(field), "%s%d:%ld", i ? "," : "", calls[i].tid, c.nr);
    text += field;
    for (uint64_t v : {c.args[0], c.args[1], c.args[2], c.args[3], c.args[4], c.args[5], c.sp, c.pc}) {
      snprintf(field, sizeof(field), ":%llx", static_cast<unsigned long long>(v));
      text += field;
    }
  }
  text += "\n";
  if (!writeAt(end_, text)) return false;
  end_ += static_cast<off_t>(text.size());
  return true;
}

bool Journal::parseBlockedCalls(const std::string& text, std::vector<procfs::ThreadCall>* out) {
  std::vector<procfs::ThreadCall> calls;
  size_t at = 0;
  while (at < text.size()) {
    size_t comma = text.find(',', at);
    std::string entry = text.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    procfs::ThreadCall tc;
    procfs::BlockedCall& c = tc.call;
    int used = 0;
    int n = sscanf(entry.c_str(), "%d:%ld:%" SCNx64 ":%" SCNx64 ":%" SCNx64 ":%" SCNx64 ":%" SCNx64 ":%" SCNx64 ":%" SCNx64 ":%" SCNx64 "%n",
                   &tc.tid, &c.nr, &c.args[0], &c.args[1], &c.args[2], &c.args[3], &c.args[4], &c.args[5], &c.sp, &c.pc, &used);
    if (n != 10 || static_cast<size_t>(used) != entry.size() || tc.tid <= 0 || c.nr < 0) return false;
    calls.push_back(tc);
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  *out = std::move(calls);
  return true;
}

bool Journal::saveRegs(const arch::Regs& regs) {
  if (!enabled()) return true;
  static const char* hex = "0123456789abcdef";
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&regs);
  std::string text;
  for (size_t i = 0; i < sizeof(regs); i++) {
    text += hex[bytes[i] >> 4];
    text += hex[bytes[i] & 15];
  }
  if (fd_ < 0 && !openExisting()) return false;
  return writeAt(regsAt_, text);
}

bool Journal::saveSigmask(uint64_t mask) {
  if (!enabled()) return true;
  if (fd_ < 0 && !openExisting()) return false;
  if (sigmaskAt_ < 0) {
    errno = ENOTSUP;
    return false;
  }
  char text[17];
  snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(mask));
  return writeAt(sigmaskAt_, text);
}

bool Journal::markForeignStop() {
  if (!enabled()) return true;
  if (fd_ < 0 && !openExisting()) return false;
  if (foreignStopAt_ < 0) {
    errno = ENOTSUP;
    return false;
  }
  return writeAt(foreignStopAt_, "1");
}

bool Journal::markRestored() {
  if (!enabled()) return true;
  if (fd_ < 0 && !openExisting()) return false;
  return writeAt(restoredAt_, "1");
}

void Journal::remove() {
  if (!enabled()) return;
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  unlink(path_.c_str());
}

}  // namespace lockmem
