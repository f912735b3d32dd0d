#include "fault.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>

namespace lockmem {

namespace {
std::atomic<int> passes{0};
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

}  // namespace lockmem
