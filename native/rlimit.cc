#include "rlimit.h"

#include <sys/resource.h>

namespace lockmem {

bool setMemlockLimit(pid_t pid, const MemlockLimit& limit, MemlockLimit* old) {
  struct rlimit next;
  next.rlim_cur = limit.soft;
  next.rlim_max = limit.hard;
  struct rlimit prev;
  if (prlimit(pid, RLIMIT_MEMLOCK, &next, &prev) != 0) return false;
  old->soft = prev.rlim_cur;
  old->hard = prev.rlim_max;
  return true;
}

}  // namespace lockmem
