// Threads of a process and what each is doing, to choose the one to inject syscalls into.
import { promises as fs } from "fs";
import * as path from "path";
import { Arch, hostArch } from "../arch";
import { DEFAULT_PROC_ROOT, isVanishedProcess, procReadError, readProcFile } from "./read";
import { parseStat } from "./stat";

/** What /proc/PID/task/TID/syscall says about a thread. */
export type ThreadActivity =
  /** "running": on a CPU right now; it stops outside any syscall when interrupted. */
  | { kind: "running" }
  /** "-1 sp pc": stopped or preempted in user space, not in a syscall. */
  | { kind: "user" }
  /** "nr args... sp pc": blocked in syscall nr (numbers of the target's ABI). */
  | { kind: "syscall"; nr: number }
  /** The file could not be read (permission), so we do not know. */
  | { kind: "unknown" };

export interface ThreadInfo {
  tid: number;
  /** One letter from task/TID/stat, e.g. "S", "R", "T". */
  state: string;
  activity: ThreadActivity;
}

export function parseTaskSyscall(text: string): ThreadActivity {
  const trimmed = text.trim();
  if (trimmed === "running") return { kind: "running" };
  const first = trimmed.split(" ")[0];
  if (first === "-1") return { kind: "user" };
  const nr = Number(first);
  if (first === "" || !Number.isSafeInteger(nr) || nr < 0) return { kind: "unknown" };
  return { kind: "syscall", nr };
}

/** Every thread of pid now. Threads that exit while we look are left out. */
export async function readThreads(pid: number, procRoot: string = DEFAULT_PROC_ROOT): Promise<ThreadInfo[]> {
  const taskDir = path.join(procRoot, String(pid), "task");
  let entries: string[];
  try {
    entries = await fs.readdir(taskDir);
  } catch (err) {
    throw procReadError(err, pid, taskDir);
  }
  const tids = entries.filter((entry) => /^\d+$/.test(entry)).map(Number).sort((a, b) => a - b);
  const threads = await Promise.all(tids.map((tid) => readThread(pid, tid, procRoot)));
  return threads.filter((thread): thread is ThreadInfo => thread !== undefined);
}

async function readThread(pid: number, tid: number, procRoot: string): Promise<ThreadInfo | undefined> {
  try {
    const stat = parseStat(await readProcFile(pid, `task/${tid}/stat`, procRoot));
    let activity: ThreadActivity;
    try {
      activity = parseTaskSyscall(await readProcFile(pid, `task/${tid}/syscall`, procRoot));
    } catch (err) {
      if (isVanishedProcess(err)) throw err;
      // task/TID/syscall needs ptrace-attach access; without it we still list the thread.
      activity = { kind: "unknown" };
    }
    return { tid, state: stat.state, activity };
  } catch (err) {
    if (isVanishedProcess(err)) return undefined;
    throw err;
  }
}

/** The syscall tables are per architecture (arm64 uses the generic table). */
export type SyscallArch = Arch;

interface SyscallTable {
  /**
   * Blocking calls that come back with -ERESTARTSYS / -ERESTARTNOHAND /
   * -ERESTART_RESTARTBLOCK when a ptrace interrupt stops the thread; restoring the saved
   * registers makes the kernel re-issue them, and the program never notices.
   */
  restartedTransparently: Record<string, number>;
  /**
   * signal(7), "Interruption of system calls and library functions by stop signals":
   * on Linux these fail with EINTR after the thread is stopped and resumed, even with no
   * signal handler (epoll_wait, epoll_pwait, semop, semtimedop, sigtimedwait, sigwaitinfo).
   * io_getevents/io_pgetevents (fs/aio.c turns a pending-signal wake-up into -EINTR) and
   * epoll_pwait2 (same code as epoll_pwait) behave the same, and so does io_uring_enter
   * waiting for completions (IORING_ENTER_GETEVENTS; seen 48 of 48 sessions before it was
   * listed). tests/safety/eintr.test.ts checks every call listed here and a few controls
   * against a plain SIGSTOP/SIGCONT first, on the running kernel.
   * Checked on Linux 6.18 x86_64 (PTRACE_SEIZE + PTRACE_INTERRUPT, restore the registers,
   * detach): epoll_wait, semtimedop, rt_sigtimedwait, io_getevents and recvfrom with
   * SO_RCVTIMEO stop with rax == -EINTR and the program sees EINTR; clock_nanosleep, read,
   * futex, poll, wait4 and recvfrom without a timeout stop with -ERESTART* and complete normally.
   */
  eintrOnStop: Record<string, number>;
  /**
   * signal(7), same list: socket calls return EINTR after a stop only when the socket has
   * SO_RCVTIMEO / SO_SNDTIMEO (connect: SO_SNDTIMEO, seen 48 of 48 sessions before it was
   * listed), which we cannot see from here: worse than a sure restart.
   */
  eintrOnStopIfTimeout: Record<string, number>;
}

const SYSCALLS: Record<SyscallArch, SyscallTable> = {
  // arch/x86/entry/syscalls/syscall_64.tbl
  x64: {
    restartedTransparently: {
      read: 0, write: 1, poll: 7, pread64: 17, pwrite64: 18, readv: 19, writev: 20, select: 23,
      pause: 34, nanosleep: 35, wait4: 61, rt_sigsuspend: 130, futex: 202, clock_nanosleep: 230,
      waitid: 247, pselect6: 270, ppoll: 271, futex_waitv: 449,
      // Where a thread is after a stop interrupted a relative sleep or timed futex wait.
      restart_syscall: 219,
    },
    eintrOnStop: {
      semop: 65, rt_sigtimedwait: 128, io_getevents: 208, semtimedop: 220, epoll_wait: 232,
      epoll_pwait: 281, io_pgetevents: 333, io_uring_enter: 426, epoll_pwait2: 441,
    },
    eintrOnStopIfTimeout: {
      connect: 42, accept: 43, sendto: 44, recvfrom: 45, sendmsg: 46, recvmsg: 47, accept4: 288, recvmmsg: 299, sendmmsg: 307,
    },
  },
  // include/uapi/asm-generic/unistd.h (arm64 has no poll, select or epoll_wait, only the p* forms)
  arm64: {
    restartedTransparently: {
      read: 63, write: 64, readv: 65, writev: 66, pread64: 67, pwrite64: 68, pselect6: 72, ppoll: 73,
      waitid: 95, futex: 98, nanosleep: 101, clock_nanosleep: 115, rt_sigsuspend: 133, wait4: 260,
      futex_waitv: 449,
      // Where a thread is after a stop interrupted a relative sleep or timed futex wait.
      restart_syscall: 128,
    },
    eintrOnStop: {
      io_getevents: 4, epoll_pwait: 22, rt_sigtimedwait: 137, semtimedop: 192, semop: 193,
      io_pgetevents: 292, io_uring_enter: 426, epoll_pwait2: 441,
    },
    eintrOnStopIfTimeout: {
      connect: 203, accept: 202, sendto: 206, recvfrom: 207, sendmsg: 211, recvmsg: 212, accept4: 242, recvmmsg: 243, sendmmsg: 269,
    },
  },
};

function nameOf(table: Record<string, number>, nr: number): string | undefined {
  return Object.keys(table).find((name) => table[name] === nr);
}

/** Name of syscall nr on arch, for messages; "syscall N" when we do not list it. */
export function syscallName(nr: number, arch: SyscallArch = hostSyscallArch()): string {
  const table = SYSCALLS[arch];
  return (
    nameOf(table.restartedTransparently, nr) ??
    nameOf(table.eintrOnStop, nr) ??
    nameOf(table.eintrOnStopIfTimeout, nr) ??
    `syscall ${nr}`
  );
}

export function hostSyscallArch(): SyscallArch {
  return hostArch() ?? "x64";
}

export interface InjectionChoice {
  tid: number;
  /** Why this thread, in words for a log or an error. */
  reason: string;
  /** True when the chosen thread is blocked in a call that returns EINTR after a stop: the injector must re-arm it. */
  mayInterruptSyscall: boolean;
}

// Lower is better.
function rank(thread: ThreadInfo, table: SyscallTable): { rank: number; reason: string; mayInterruptSyscall: boolean } {
  const activity = thread.activity;
  if (activity.kind === "running") return { rank: 0, reason: "it is running (not in a syscall)", mayInterruptSyscall: false };
  if (activity.kind === "user") return { rank: 0, reason: "it is not in a syscall", mayInterruptSyscall: false };
  if (activity.kind === "unknown") {
    return { rank: 3, reason: "its syscall state is unreadable", mayInterruptSyscall: true };
  }
  const restarted = nameOf(table.restartedTransparently, activity.nr);
  if (restarted) {
    return { rank: 1, reason: `it is blocked in ${restarted}, which the kernel restarts transparently`, mayInterruptSyscall: false };
  }
  const eintr = nameOf(table.eintrOnStop, activity.nr);
  if (eintr) {
    return { rank: 4, reason: `every thread is blocked in a call that returns EINTR after a stop; it is in ${eintr}`, mayInterruptSyscall: true };
  }
  const maybe = nameOf(table.eintrOnStopIfTimeout, activity.nr);
  if (maybe) {
    return { rank: 2, reason: `it is blocked in ${maybe}, which returns EINTR after a stop only if the socket has a timeout`, mayInterruptSyscall: true };
  }
  return { rank: 2, reason: `it is blocked in syscall ${activity.nr}, not known to return EINTR after a stop`, mayInterruptSyscall: false };
}

/**
 * The thread to inject into. mlock acts on the whole address space, so any thread will do;
 * we take the one the program will notice least: running or outside a syscall, then blocked
 * in a transparently restarted call, then anything else, and a call that returns EINTR
 * after a stop (signal(7)) only when every thread is in one. Ties go to the main thread
 * (tid == pid), then to the lowest tid. Undefined for an empty list.
 */
export function pickInjectionThread(
  threads: ThreadInfo[],
  pid: number,
  arch: SyscallArch = hostSyscallArch(),
): InjectionChoice | undefined {
  const table = SYSCALLS[arch];
  const mainTid = pid;
  // The main thread blocked in a call that returns EINTR after a stop is taken itself: as
  // another thread it would have to be re-armed and put back into the group stop, and the
  // kernel hands process-wide signals (our SIGCONT among them) to the main thread first;
  // seen on Linux 6.18, about one EINTR in 300 sessions that way, none when it is the
  // injected thread, whose re-arm happens before it ever leaves our hands.
  const main = threads.find((t) => t.tid === mainTid);
  if (main && main.activity.kind === "syscall") {
    const eintr = nameOf(table.eintrOnStop, main.activity.nr) ?? nameOf(table.eintrOnStopIfTimeout, main.activity.nr);
    if (eintr) return { tid: mainTid, reason: `main thread: it is blocked in ${eintr}, which returns EINTR after a stop; lockmem re-issues it`, mayInterruptSyscall: true };
  }
  let best: { thread: ThreadInfo; rank: number; reason: string; mayInterruptSyscall: boolean } | undefined;
  for (const thread of threads) {
    const ranked = { thread, ...rank(thread, table) };
    if (!best || ranked.rank < best.rank) {
      best = ranked;
    } else if (ranked.rank === best.rank) {
      const preferCandidate =
        ranked.thread.tid === mainTid || (best.thread.tid !== mainTid && ranked.thread.tid < best.thread.tid);
      if (preferCandidate) best = ranked;
    }
  }
  if (!best) return undefined;
  const who = best.thread.tid === mainTid ? "main thread" : `thread ${best.thread.tid}`;
  return { tid: best.thread.tid, reason: `${who}: ${best.reason}`, mayInterruptSyscall: best.mayInterruptSyscall };
}

/**
 * Calls that may come back with EINTR after a stop (with or without a socket timeout):
 * threads blocked in one when lockmem group-stops the process get them re-issued.
 */
export function syscallsReturningEintrOnStop(arch: SyscallArch = hostSyscallArch()): number[] {
  const table = SYSCALLS[arch];
  return [...Object.values(table.eintrOnStop), ...Object.values(table.eintrOnStopIfTimeout)];
}
