#include "fault.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>

namespace lockmem {

namespace {
std::atomic<int> passes{0};
std::atomic<long> signalled{0};
}

void faultPoint(const char* point) {
  const char* spec = getenv("LOCKMEM_TEST_KILL_AT");
  if (spec == nullptr || *spec == '\0') return;
  // "group:<point>": SIGKILL the whole process group, as a script's timeout would.
  bool group = strncmp(spec, "group:", 6) == 0;
  if (group) spec += 6;
  size_t n = strlen(point);
  if (strncmp(spec, point, n) != 0 || (spec[n] != '\0' && spec[n] != ':')) return;
  int wanted = spec[n] == ':' ? atoi(spec + n + 1) : 1;
  if (++passes >= wanted) kill(group ? 0 : getpid(), SIGKILL);
}

void signalPoint(const char* point, pid_t target, const std::function<bool()>& when) {
  const char* spec = getenv("LOCKMEM_TEST_SIGNAL_AT");
  if (spec == nullptr || *spec == '\0') return;
  size_t n = strlen(point);
  if (strncmp(spec, point, n) != 0 || spec[n] != ':') return;
  char* rest = nullptr;
  long sig = strtol(spec + n + 1, &rest, 10);
  if (sig <= 0 || *rest != ':') return;
  long times = strtol(rest + 1, &rest, 10);
  if (*rest != ':' || signalled.load() >= times || !when()) return;
  if (signalled.fetch_add(1) >= times) return;
  kill(target, static_cast<int>(sig));
  int fd = open(rest + 1, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd >= 0) (void)!write(fd, "x\n", 2);
  if (fd >= 0) close(fd);
}

}  // namespace lockmem
