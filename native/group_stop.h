// The process-wide group stop as /proc shows it, for the code that decides when the
// process may be continued (a session's release, undoStop()).
#pragma once

#include <sys/types.h>

namespace lockmem {

// A SIGSTOP is pending for the whole process (ShdPnd).
bool stopPending(pid_t pid);

// Some thread of the process reads as stopped ('T' or 't').
bool anyThreadStopped(pid_t pid);

// Waits (bounded) until every thread is back in the group stop, or cannot be.
void waitUntilAllStopped(pid_t pid);

}  // namespace lockmem
