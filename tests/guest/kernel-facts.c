// The kernel facts lockmem relies on, probed in a guest (issue 19: "state per kernel what
// holds"). Compiled statically on the host for the guest's architecture (the guests carry
// no compiler) and run there as root; prints one `name=value` line per fact. The test
// (tests/guest/kernels.test.ts) says which values each kernel must show.
//
// Facts, and why lockmem cares:
//   getsigmask_in_ppoll  real|temporary: what PTRACE_GETSIGMASK reads for a thread stopped
//                        on its way out of ppoll (temporary mask installed, restore pending).
//                        "real" since Linux 5.2; before, the temporary mask (native/session.cc
//                        then journals no mask).
//   task_syscall         the syscall number /proc/PID/task/TID/syscall shows for a thread
//                        blocked in ppoll (how lockmem picks a thread not in an EINTR-prone call)
//   get_syscall_info     ok|errno: PTRACE_GET_SYSCALL_INFO (5.3); lockmem does not need it
//   seccomp_get_filter   instructions of a one-instruction filter read back (4.4)
//   suspend_seccomp      ok|errno: PTRACE_O_SUSPEND_SECCOMP at seize (4.3)
//   mlock2_onfault       ok|errno: mlock2(MLOCK_ONFAULT) (4.4)
//   onfault_flag         how smaps' VmFlags shows VM_LOCKONFAULT: "lf" since Linux 6.2, "??" (a
//                        flag without a name) before: lockmem reads "lf" (src/select.ts)
//   mlockall_onfault     ok|errno: mlockall(MCL_CURRENT | MCL_ONFAULT) (4.4)
//   epoll_pwait2         ok|ENOSYS (5.11): a call lockmem's EINTR table lists
//   pidfd_open           ok|ENOSYS (5.3); lockmem does not need it
//   status_missing       /proc/PID/status fields lockmem reads that are absent ("" = none)
//   smaps_missing        smaps fields lockmem reads that are absent ("" = none)
//   vsyscall             the [vsyscall] mapping's permissions, or "none"
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <sys/ptrace.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 0x01
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif
// The generic syscall table numbers, the same on x86_64 and arm64 from 424 on.
#define NR_PIDFD_OPEN 434
#define NR_EPOLL_PWAIT2 441

static char* slurp(const char* path) {
  FILE* f = fopen(path, "r");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0;
  char* buf = malloc(cap);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 == cap) buf = realloc(buf, cap *= 2);
  }
  buf[len] = 0;
  fclose(f);
  return buf;
}

static const char* err(int e) {
  static char b[64];
  snprintf(b, sizeof b, "%s", strerrorname_np(e) ? strerrorname_np(e) : "errno");
  return b;
}

// Waits (bounded) until the child is blocked in syscall `nr`; returns 0 when it is.
static int wait_in_syscall(pid_t pid, long nr) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/syscall", pid);
  for (int i = 0; i < 5000; i++) {
    char* s = slurp(path);
    long got = s ? strtol(s, NULL, 10) : -2;
    free(s);
    if (got == nr) return 0;
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return -1;
}

static void seize_and_interrupt(pid_t pid, long options) {
  if (ptrace(PTRACE_SEIZE, pid, 0, options) != 0 || ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0) return;
  int st;
  waitpid(pid, &st, __WALL);
}

static void reap(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, __WALL);
}

static void probe_ppoll(void) {
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t real, tmp;
    sigemptyset(&real);
    sigaddset(&real, SIGUSR1);
    sigprocmask(SIG_SETMASK, &real, NULL);
    sigemptyset(&tmp);
    sigaddset(&tmp, SIGUSR2);
    for (;;) ppoll(NULL, 0, NULL, &tmp);
  }
  if (wait_in_syscall(pid, SYS_ppoll) != 0) {
    printf("task_syscall=not-seen\n");
    reap(pid);
    return;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", pid, pid);
  char* s = slurp(path);
  printf("task_syscall=%ld\n", s ? strtol(s, NULL, 10) : -1L);
  free(s);
  seize_and_interrupt(pid, 0);
  uint64_t mask = 0;
  if (ptrace(PTRACE_GETSIGMASK, pid, sizeof mask, &mask) != 0) {
    printf("getsigmask_in_ppoll=%s\n", err(errno));
  } else {
    uint64_t usr1 = 1ull << (SIGUSR1 - 1), usr2 = 1ull << (SIGUSR2 - 1);
    printf("getsigmask_in_ppoll=%s\n", (mask & usr1) && !(mask & usr2) ? "real" : (mask & usr2) && !(mask & usr1) ? "temporary" : "other");
  }
#ifdef PTRACE_GET_SYSCALL_INFO
  struct __ptrace_syscall_info info;
  long r = ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof info, &info);
  printf("get_syscall_info=%s\n", r > 0 ? "ok" : err(errno));
#else
  printf("get_syscall_info=no-header\n");
#endif
  reap(pid);
}

static void probe_seccomp(void) {
  int ready[2];
  if (pipe(ready) != 0) return;
  pid_t pid = fork();
  if (pid == 0) {
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {1, allow};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    char ok = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0 ? 'y' : 'n';
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    for (;;) pause();
  }
  char ok = 'n';
  if (read(ready[0], &ok, 1) != 1 || ok != 'y') {
    printf("seccomp_get_filter=no-filter\n");
    reap(pid);
    return;
  }
  long seized = ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_SUSPEND_SECCOMP);
  printf("suspend_seccomp=%s\n", seized == 0 ? "ok" : err(errno));
  if (seized != 0) seize_and_interrupt(pid, 0);
  else {
    ptrace(PTRACE_INTERRUPT, pid, 0, 0);
    waitpid(pid, NULL, __WALL);
  }
  long n = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0, NULL);
  if (n >= 0) printf("seccomp_get_filter=%ld\n", n);
  else printf("seccomp_get_filter=%s\n", err(errno));
  reap(pid);
}

// " rd wr ... " (padded with spaces) of the VMA that starts at p, or NULL.
static char* vm_flags(void* p) {
  char* smaps = slurp("/proc/self/smaps");
  char head[32];
  snprintf(head, sizeof head, "%lx-", (unsigned long)p);
  char* at = smaps ? strstr(smaps, head) : NULL;
  char* flags = at ? strstr(at, "VmFlags:") : NULL;
  char* out = NULL;
  if (flags) {
    char* eol = strchr(flags, '\n');
    if (eol) *eol = 0;
    out = malloc(strlen(flags) + 2);
    sprintf(out, "%s ", flags + strlen("VmFlags:"));
  }
  free(smaps);
  return out;
}

static void probe_mlock(void) {
  size_t len = 4 * (size_t)sysconf(_SC_PAGESIZE);
  char* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (syscall(SYS_mlock2, p, len, MLOCK_ONFAULT) != 0) {
    printf("mlock2_onfault=%s\n", err(errno));
  } else {
    printf("mlock2_onfault=ok\n");
    // The VMA's VmFlags line, compared with the same VMA locked in full.
    char* on_fault = vm_flags(p);
    if (syscall(SYS_mlock2, p, len, 0) != 0) printf("onfault_flag=%s\n", err(errno));
    else {
      char* full = vm_flags(p);
      const char* extra = "none";
      if (on_fault && full) {
        // The one mnemonic the on-fault line has and the full one lacks.
        for (char* tok = strtok(on_fault, " "); tok; tok = strtok(NULL, " ")) {
          char word[8];
          snprintf(word, sizeof word, " %s ", tok);
          if (!strstr(full, word)) {
            extra = tok;
            break;
          }
        }
      }
      printf("onfault_flag=%s\n", extra);
      free(full);
    }
    free(on_fault);
    munlock(p, len);
  }
  munmap(p, len);
  if (mlockall(MCL_CURRENT | MCL_ONFAULT) != 0) printf("mlockall_onfault=%s\n", err(errno));
  else {
    printf("mlockall_onfault=ok\n");
    munlockall();
  }
}

static void probe_calls(void) {
  int ep = epoll_create1(0);
  struct epoll_event ev;
  struct timespec zero = {0, 0};
  long r = syscall(NR_EPOLL_PWAIT2, ep, &ev, 1, &zero, NULL, 0);
  printf("epoll_pwait2=%s\n", r >= 0 ? "ok" : err(errno));
  close(ep);
  long fd = syscall(NR_PIDFD_OPEN, getpid(), 0);
  printf("pidfd_open=%s\n", fd >= 0 ? "ok" : err(errno));
  if (fd >= 0) close((int)fd);
}

static void missing(const char* name, const char* text, const char* const* fields) {
  char out[256] = "";
  for (; *fields; fields++) {
    char key[48];
    snprintf(key, sizeof key, "\n%s:", *fields);
    if (!text || !strstr(text, key)) {
      if (*out) strcat(out, ",");
      strcat(out, *fields);
    }
  }
  printf("%s=%s\n", name, out);
}

static void probe_proc(void) {
  static const char* const status[] = {"VmLck", "VmSize", "SigPnd", "ShdPnd", "SigBlk", "SigCgt", "CapEff", "Seccomp", "Seccomp_filters", NULL};
  static const char* const smaps[] = {"Rss", "Anonymous", "Locked", "VmFlags", NULL};
  char* s = slurp("/proc/self/status");
  missing("status_missing", s, status);
  free(s);
  s = slurp("/proc/self/smaps");
  missing("smaps_missing", s, smaps);
  free(s);
  char* maps = slurp("/proc/self/maps");
  char* v = maps ? strstr(maps, "[vsyscall]") : NULL;
  if (!v) printf("vsyscall=none\n");
  else {
    char* line = v;
    while (line > maps && line[-1] != '\n') line--;
    char perms[5] = "";
    sscanf(line, "%*s %4s", perms);
    printf("vsyscall=%s\n", perms);
  }
  free(maps);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  probe_ppoll();
  probe_seccomp();
  probe_mlock();
  probe_calls();
  probe_proc();
  return 0;
}
