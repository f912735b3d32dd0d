// Fault injection for the crash-safety tests: LOCKMEM_TEST_KILL_AT=<point>[:<n>] makes the
// process SIGKILL itself the n-th time (default first) it passes <point> ("group:<point>":
// its whole process group). Unset in
// production, where faultPoint() is one getenv and a compare.
//
// LOCKMEM_TEST_SIGNAL_AT=<point>:<signal number>:<times>:<marker file> makes the first
// <times> passes of <point> in this process where `when()` holds send that signal to the
// target, as another operator's `kill` would at the worst moment, and append a line to the
// marker file each time (with times 1, a retried session then runs undisturbed). `when`
// is asked only with the variable set.
#pragma once

#include <sys/types.h>

#include <functional>

namespace lockmem {
void faultPoint(const char* point);
void signalPoint(const char* point, pid_t target, const std::function<bool()>& when);
}
