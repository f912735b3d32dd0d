// The parts of the arch module that are the same on every architecture but use the
// target's syscall numbers: compiled once per target_arch, beside that arch's file.
#include "arch.h"

#include <sys/syscall.h>

namespace lockmem {
namespace arch {

bool installsTemporaryMask(long nr, uint64_t arg4, uint64_t arg5) {
  switch (nr) {
    case SYS_ppoll:
      return arg4 != 0;
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
      return arg5 != 0;
    case SYS_pselect6:
    case SYS_rt_sigsuspend:
    case SYS_io_pgetevents:
    case SYS_io_uring_enter:
      return true;
    default:
      return false;
  }
}

}  // namespace arch
}  // namespace lockmem
