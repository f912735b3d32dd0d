// The floor under every injected call (issue 13, "10,000 mappings"): what one ptrace stop
// costs on this machine, tracer and tracee on the same CPU or not. Each injected call needs
// two stops (syscall entry and exit, PTRACE_SYSCALL); lockmem cannot choose the tracee's
// CPU (pinning the target would change it), and the scheduler wakes a resumed tracee on an
// idle CPU rather than on the busy one of its tracer, so on a machine with an idle core
// every stop is a cross-CPU handoff.
//
// Build and run (no Node needed):  gcc -O2 -o /tmp/handoff bench/handoff.c && /tmp/handoff
// Prints the cost of one resume-to-stop round trip per placement, and the ratios to the
// same-CPU figure, all from this run.
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum Placement { kFree, kSameCpu, kOtherCpu, kFreeSpinningTracer, kPlacements };
static const char* kNames[] = {"unpinned (as lockmem runs)", "both on CPU 0", "CPU 0 and CPU 1", "unpinned, tracer polls"};

static double nowUs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void pinSelf(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

// Microseconds per PTRACE_SYSCALL-to-stop round trip of a child looping on getppid().
static double roundTrip(enum Placement p, int n) {
  pid_t child = fork();
  if (child == 0) {
    if (p == kSameCpu || p == kOtherCpu) pinSelf(0);
    for (;;) syscall(SYS_getppid);
  }
  cpu_set_t saved;
  sched_getaffinity(0, sizeof saved, &saved);
  if (p == kSameCpu) pinSelf(0);
  if (p == kOtherCpu) pinSelf(1);
  int status;
  ptrace(PTRACE_SEIZE, child, 0, 0);
  ptrace(PTRACE_INTERRUPT, child, 0, 0);
  waitpid(child, &status, 0);
  double t0 = nowUs();
  for (int i = 0; i < n; i++) {
    ptrace(PTRACE_SYSCALL, child, 0, 0);
    if (p == kFreeSpinningTracer) {
      while (waitpid(child, &status, WNOHANG) == 0) {
      }
    } else {
      waitpid(child, &status, 0);
    }
  }
  double us = (nowUs() - t0) / n;
  kill(child, SIGKILL);
  waitpid(child, &status, 0);
  sched_setaffinity(0, sizeof saved, &saved);
  return us;
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  int rounds = argc > 2 ? atoi(argv[2]) : 3;
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    fprintf(stderr, "handoff: needs two CPUs\n");
    return 1;
  }
  double best[kPlacements];
  for (int p = 0; p < kPlacements; p++) best[p] = 1e18;
  // Placements alternate round by round, so load from elsewhere hits all of them alike.
  for (int r = 0; r < rounds; r++) {
    for (int p = 0; p < kPlacements; p++) {
      double us = roundTrip((enum Placement)p, n);
      if (us < best[p]) best[p] = us;
    }
  }
  printf("one ptrace stop (resume to stop), best of %d rounds of %d:\n", rounds, n);
  for (int p = 0; p < kPlacements; p++) {
    printf("  %-28s %7.2f us   %5.1fx the same-CPU figure\n", kNames[p], best[p], best[p] / best[kSameCpu]);
  }
  printf("an injected call takes two stops: about %.0f us here as lockmem runs, against %.0f us if the\n"
         "tracee could share the tracer's CPU\n",
         2 * best[kFree], 2 * best[kSameCpu]);
  return 0;
}
