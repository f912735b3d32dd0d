// Fault injection for the crash-safety tests: LOCKMEM_TEST_KILL_AT=<point>[:<n>] makes the
// process SIGKILL itself the n-th time (default first) it passes <point> ("group:<point>":
// its whole process group). Unset in
// production, where faultPoint() is one getenv and a compare.
#pragma once

namespace lockmem {
void faultPoint(const char* point);
}
