// Runs a planned batch in the target through the addon and turns native failures
// (NativeError, src/errors.ts) into LockErrors that say what happened and what to do.
import { promises as fs } from "fs";
import { LockError, NativeError } from "./errors";
import { ensureGuardian } from "./guardian";
import { journalFiles, removeJournal, writeJournalHeader } from "./journal";
import { BatchReply, native, SyscallOp } from "./native";
import { readThreads, pickInjectionThread, InjectionChoice, syscallsReturningEintrOnStop } from "./proc/tasks";
import { readStatus } from "./proc/status";
import { isVanishedProcess, readProcFile } from "./proc/read";
import { parseStat } from "./proc/stat";
import { Mapping } from "./types";

export interface InjectionResult {
  reply: BatchReply;
  thread: InjectionChoice;
}

async function readYamaScope(): Promise<number | undefined> {
  try {
    return Number((await fs.readFile("/proc/sys/kernel/yama/ptrace_scope", "utf8")).trim());
  } catch {
    return undefined;
  }
}

/** include/linux/sched.h: set once the process has begun to exit. */
const PF_EXITING = 0x00000004;

/**
 * True when `pid` is no longer the live process lockmem worked on: gone, a zombie, exiting,
 * or (given its start time) a new process under a reused pid. ptrace refuses such a target
 * with EPERM as it refuses a forbidden one (issue 14: 64 of 250 targets that exited
 * mid-operation were told "ptrace denied... check SELinux/AppArmor").
 */
export async function hasExited(pid: number, startTime?: string): Promise<boolean> {
  try {
    const stat = parseStat(await readProcFile(pid, "stat"));
    if (startTime !== undefined && stat.startTime !== startTime) return true;
    if (stat.state !== "Z" && stat.state !== "X" && (stat.flags & PF_EXITING) === 0) return false;
    // A leader that called pthread_exit() reads as a zombie while its other threads run on.
    return !(await anyLiveThread(pid));
  } catch (err) {
    return isVanishedProcess(err);
  }
}

async function anyLiveThread(pid: number): Promise<boolean> {
  const tids = await fs.readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const tid of tids) {
    if (tid === String(pid)) continue;
    const stat = await readProcFile(pid, `task/${tid}/stat`).then(parseStat, () => undefined);
    if (stat && stat.state !== "Z" && stat.state !== "X" && (stat.flags & PF_EXITING) === 0) return true;
  }
  return false;
}

function exitedError(pid: number, stage?: string, errno?: number): LockError {
  return new LockError({
    code: "ESRCH",
    pid,
    stage,
    errno,
    message: `process ${pid} exited while lockmem worked on it`,
    hint: "nothing was left behind; if it was restarted, run again to lock the new process",
  });
}

/** Why PTRACE_SEIZE was refused, in the words of `ppriv -D`: which permission, which knob. */
export async function explainPtraceDenied(pid: number, startTime?: string): Promise<{ code: "EPERM" | "EBUSY" | "ESRCH"; message: string; hint: string }> {
  if (await hasExited(pid, startTime)) {
    const exited = exitedError(pid);
    return { code: "ESRCH", message: exited.message, hint: exited.hint as string };
  }
  const status = await readStatus(pid).catch(() => undefined);
  if (status && status.tracerPid !== 0) {
    return {
      code: "EBUSY",
      message: `process ${pid} is already traced by process ${status.tracerPid} (a debugger or strace?)`,
      hint: `detach that tracer first; a process has one tracer at a time`,
    };
  }
  const yama = await readYamaScope();
  if (yama === 3) {
    return {
      code: "EPERM",
      message: `ptrace of process ${pid} denied: kernel.yama.ptrace_scope is 3 (no attach at all)`,
      hint: "ptrace_scope 3 can only be lowered by a reboot; lockmem cannot work on this host",
    };
  }
  if (process.getuid && process.getuid() !== 0) {
    return {
      code: "EPERM",
      message: `ptrace of process ${pid} denied: lockmem runs as uid ${process.getuid()} without CAP_SYS_PTRACE`,
      hint: "run lockmem as root (or with sudo, or `sudo: true` on the connection)",
    };
  }
  return {
    code: "EPERM",
    message: `ptrace of process ${pid} denied${yama !== undefined ? ` (kernel.yama.ptrace_scope=${yama})` : ""}`,
    hint: "check for a security module (SELinux, AppArmor) or a container that forbids ptrace, and that lockmem runs with CAP_SYS_PTRACE",
  };
}

/** `startTime`, when known, also tells a pid reused by a new process from the target. */
export async function toLockError(err: unknown, pid: number, startTime?: string): Promise<LockError> {
  if (err instanceof LockError) {
    // A check that failed because the target was exiting under it (smaps read half before,
    // half after its exit has no [vdso]) is that exit, not what the check says.
    const mayBeExit = !["ESRCH", "ENOTARGET", "EUSAGE", "EAMBIGUOUS", "EBUSY"].includes(err.code);
    return mayBeExit && (await hasExited(pid, startTime)) ? exitedError(pid, err.stage, err.errno) : err;
  }
  if (!(err instanceof NativeError)) {
    return new LockError({ code: "EINTERNAL", pid, message: err instanceof Error ? err.message : String(err) });
  }
  // A target that exits mid-session fails ptrace in many ways (ESRCH, EPERM at attach, a
  // wait that reports its exit): all of them are that one fact.
  if (err.code === "ESRCH" || (err.stage !== "seccomp" && err.stage !== "journal" && err.stage !== "arch" && (await hasExited(pid, startTime)))) {
    return exitedError(pid, err.stage, err.errno);
  }
  if (err.stage === "attach" && err.code === "EPERM") {
    const why = await explainPtraceDenied(pid, startTime);
    return new LockError({ code: why.code, pid, stage: "attach", errno: err.errno, syscall: "ptrace", message: why.message, hint: why.hint });
  }
  if (err.stage === "seccomp") {
    return new LockError({
      code: "ESECCOMP",
      pid,
      stage: err.stage,
      errno: err.errno,
      message: err.message,
      hint: "allow the @memlock syscalls in its filter (systemd: SystemCallFilter=@memlock), or pass --allow-seccomp-suspend (allowSeccompSuspend: true) to suspend the filter for lockmem's calls only",
    });
  }
  if (err.stage === "journal") {
    return new LockError({
      code: "EINTERNAL",
      pid,
      stage: err.stage,
      errno: err.errno,
      message: `${err.message}: lockmem did not touch process ${pid}`,
      hint: "lockmem keeps a crash journal under /run/lockmem (LOCKMEM_STATE_DIR): make it writable",
    });
  }
  if (err.stage === "arch") {
    return new LockError({ code: "EARCH", pid, stage: err.stage, errno: err.errno, message: err.message });
  }
  return new LockError({
    code: err.code === "EAGAIN" ? "EAGAIN" : "EINTERNAL",
    pid,
    stage: err.stage,
    errno: err.errno,
    syscall: "ptrace",
    message: `${err.message} (stage ${err.stage})`,
    hint: "the target was put back as it was; run again",
  });
}

/** The journal could not be written: nothing was touched. */
function journalUnwritable(err: NodeJS.ErrnoException, pid: number, file: string): LockError {
  if (err instanceof LockError) return err;
  const uid = process.getuid?.() ?? 0;
  return new LockError({
    code: err.code === "EACCES" || err.code === "EPERM" ? "EPERM" : "EINTERNAL",
    pid,
    stage: "journal",
    message: `cannot write lockmem's crash journal ${file}: ${err.message}; process ${pid} was not touched`,
    hint: uid === 0 ? "make the state directory (/run/lockmem or LOCKMEM_STATE_DIR) writable for root" : `lockmem runs as uid ${uid}: set LOCKMEM_STATE_DIR to a folder of yours, or run it as root`,
  });
}

function vdsoOf(mappings: Mapping[], pid: number): Mapping {
  const vdso = mappings.find((m) => m.kind === "vdso");
  // A live process always has mappings; the smaps of one that exited (a zombie) is empty.
  if (mappings.length === 0) throw exitedError(pid);
  if (!vdso) {
    throw new LockError({
      code: "EARCH",
      pid,
      message: `process ${pid} has no [vdso] mapping (booted with vdso=0?), where lockmem finds its syscall instruction`,
      hint: "lockmem needs the vDSO; boot without vdso=0",
    });
  }
  return vdso;
}

export interface InjectionOptions {
  /** Start time of the process (its identity, for the crash journal). */
  startTime: string;
  /** The target runs under a seccomp filter: evaluate it for every call first. */
  checkSeccomp: boolean;
  /** Explicit opt-in: suspend the target's seccomp filter for our calls. */
  suspendSeccomp?: boolean;
}

/**
 * Runs `ops` inside the target in one ptrace session, crash-safe: the process is held in
 * a group stop and the session journaled, so that if lockmem dies a later run puts it back.
 */
export async function runInTarget(pid: number, mappings: Mapping[], ops: SyscallOp[], opts: InjectionOptions): Promise<InjectionResult> {
  const vdso = vdsoOf(mappings, pid);
  // Before anything can be left half done: if this process dies, its guardian recovers.
  await ensureGuardian().catch((err: unknown) => {
    throw new LockError({
      code: "EINTERNAL",
      pid,
      stage: "guardian",
      message: `cannot start lockmem's guardian (which recovers the target if lockmem is killed mid-session): ${err instanceof Error ? err.message : String(err)}; process ${pid} was not touched`,
      hint: "check that this host can start another Node.js process (memory, process limits)",
    });
  });
  for (let attempt = 0; ; attempt++) {
    const thread = pickInjectionThread(await readThreads(pid), pid);
    if (!thread) throw new LockError({ code: "ESRCH", pid, message: `process ${pid} has no threads left` });
    const files = journalFiles(pid, thread.tid, opts.startTime);
    await writeJournalHeader(files, { pid, tid: thread.tid, startTime: opts.startTime, ops }).catch((err: NodeJS.ErrnoException) => {
      throw journalUnwritable(err, pid, files.json);
    });
    try {
      const reply = await native().runBatch({
        pid,
        tid: thread.tid,
        vdsoStart: vdso.start,
        vdsoEnd: vdso.end,
        ops,
        stopOnError: true,
        stopProcess: true,
        eintrSyscalls: syscallsReturningEintrOnStop(),
        journalPath: files.regs,
        checkSeccomp: opts.checkSeccomp,
        suspendSeccomp: opts.suspendSeccomp === true,
      });
      await removeJournal(files);
      return { reply, thread };
    } catch (err) {
      // Keep the journal only when the target may still hold our state.
      const failure = err instanceof NativeError ? err : undefined;
      if (failure?.journalRemoved !== false) await removeJournal(files);
      // The chosen thread may have exited between the choice and the attach: choose again.
      const threadGone = failure?.code === "ESRCH" && failure.stage === "attach" && thread.tid !== pid;
      if (threadGone && attempt < 3) continue;
      // Someone's SIGCONT discarded our SIGSTOP before it was taken (the session gave up
      // without touching anything rather than inject without the hold): a new session
      // sends a new one.
      const holdRefused = failure?.code === "EAGAIN" && failure.stage === "interrupt" && failure.journalRemoved !== false;
      if (holdRefused && attempt < 3) continue;
      throw await toLockError(err, pid, opts.startTime);
    }
  }
}
