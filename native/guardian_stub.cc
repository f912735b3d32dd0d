#include "guardian_stub.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace lockmem {

namespace {

// Fds 0-2 are /dev/null in the stub, 3 the pipe, 4 the executable.
constexpr int kPipeFd = 3;
constexpr int kExeFd = 4;
// Closed above the highest fd open at the fork, for fds other threads opened meanwhile.
constexpr int kFdMargin = 1024;

// The highest fd open now (read before the fork: opendir is not safe in the child).
int highestFd() {
  int highest = 2;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return 65535;
  while (dirent* e = readdir(dir)) {
    int fd = atoi(e->d_name);
    if (fd > highest) highest = fd;
  }
  closedir(dir);
  return highest;
}

std::vector<char*> cStrings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  for (const std::string& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// In the child of a multi-threaded process: only async-signal-safe calls until execve.
[[noreturn]] void runStub(int readFd, int exeFd, int highest, char* const* argv, char* const* envp, bool root) {
  setsid();  // a signal to the owner's process group or a hang-up does not reach it
  struct sigaction ignore = {};
  ignore.sa_handler = SIG_IGN;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaction(sig, &ignore, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // Out of the way of 0-4 first, then into place.
  // (dup2, not fcntl(F_DUPFD): glibc >= 2.28 binds fcntl to fcntl64, above the addon's glibc floor.)
  int r = dup2(readFd, highest + 1);
  int x = dup2(exeFd, highest + 2);
  int null = open("/dev/null", O_RDWR);
  if (r < 0 || x < 0 || null < 0) _exit(127);
  for (int fd = 0; fd < 3; fd++) dup2(null, fd);
  dup2(r, kPipeFd);
  dup2(x, kExeFd);
  // Nothing else of the owner's may stay open here: not its SSH session's pipes (the
  // session would not end), not its target locks (they must die with it).
  if (syscall(SYS_close_range, kExeFd + 1, ~0U, 0) != 0) {
    for (int fd = kExeFd + 1; fd <= highest + kFdMargin; fd++) close(fd);
  }
  if (root) {
    // The OOM killer that takes the owner must not take this one too.
    int adj = open("/proc/self/oom_score_adj", O_WRONLY);
    if (adj >= 0) {
      (void)!write(adj, "-1000", 5);
      close(adj);
    }
  }
  char c = 0;
  for (;;) {
    ssize_t n = read(kPipeFd, &c, 1);
    if (n == 1 && c == 'D') _exit(0);  // the owner exited with nothing left to recover
    if (n == 0 || (n < 0 && errno != EINTR)) break;
  }
  close(kPipeFd);
  execve("/proc/self/fd/4", argv, envp);
  _exit(127);
}

}  // namespace

bool startGuardianStub(const std::vector<std::string>& argv, const std::vector<std::string>& env, GuardianStub* out) {
  int exeFd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (exeFd < 0) return false;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    int err = errno;
    close(exeFd);
    errno = err;
    return false;
  }
  std::vector<char*> cArgv = cStrings(argv);
  std::vector<char*> cEnv = cStrings(env);
  int highest = highestFd();
  bool root = geteuid() == 0;
  pid_t pid = fork();
  if (pid == 0) runStub(fds[0], exeFd, highest, cArgv.data(), cEnv.data(), root);
  int err = errno;
  close(fds[0]);
  close(exeFd);
  if (pid < 0) {
    close(fds[1]);
    errno = err;
    return false;
  }
  out->pid = pid;
  out->writeFd = fds[1];
  return true;
}

}  // namespace lockmem
