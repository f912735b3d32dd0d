// Typed view of the native addon (native/*.cc). The addon is the only code that calls
// ptrace(2) or prlimit(2); everything else (parsing, planning, validation) is TypeScript.
import * as fs from "fs";
import * as path from "path";

/** One system call to run inside the target, with up to six arguments. */
export interface SyscallSpec {
  nr: number;
  args: bigint[];
}

/** A call to run in the target, and the call that reverts it if a later call of the batch fails. */
export interface SyscallOp extends SyscallSpec {
  undo?: SyscallSpec;
}

export interface BatchRequest {
  pid: number;
  /** The thread that executes the calls; mlock acts on the whole address space, so any thread will do. */
  tid: number;
  /** Address range of the target's [vdso], where a `syscall` instruction is found (no target memory is written). */
  vdsoStart: bigint;
  vdsoEnd: bigint;
  ops: SyscallOp[];
  /** Stop at the first failing call and run the `undo` of every earlier call, newest first. */
  stopOnError: boolean;
  /**
   * Crash safety: hold the whole process in a group stop (SIGSTOP) for the session, so that
   * if lockmem dies it stays stopped instead of running on injected registers; it is
   * continued afterwards unless it was stopped before (or someone else stopped it meanwhile).
   */
  stopProcess?: boolean;
  /** Crash journal written (fsync) before anything changes; removed when the target is safe. */
  journalPath?: string;
  /** Evaluate the target's seccomp filters for every call (and undo) first. */
  checkSeccomp?: boolean;
  /** PTRACE_O_SUSPEND_SECCOMP: explicit opt-in to bypass the filters for our calls. */
  suspendSeccomp?: boolean;
  /** Calls that return EINTR after a stop: other threads blocked in one are re-issued. */
  eintrSyscalls?: number[];
  /**
   * Recovery when no register of ours is in the thread any more: re-issue the calls our
   * stop interrupted, in every thread, then continue the process (ops are ignored).
   */
  continueOnly?: boolean;
  /** Recovery: the journaled register block to put back instead of the current registers. */
  restoreRegs?: Buffer;
  recoveredWasStopped?: boolean;
  /** Recovery: the thread's own signal mask, journaled by a run that blocked its signals. */
  restoreSigmask?: bigint;
}

export interface SyscallResult {
  /** Raw return value; negative errno values are reported in `errno` instead. */
  ret: bigint;
  errno: number;
  /** Nanoseconds between syscall entry and exit stops (the in-kernel time, plus stop overhead). */
  ns: number;
}

export interface BatchReply {
  tid: number;
  results: SyscallResult[];
  /** How many undo calls ran because a call failed. */
  undone: number;
  undoResults: SyscallResult[];
  /** Nanoseconds during which the thread was held stopped by us. */
  pauseNs: number;
  /** True when the thread was in a call that returned EINTR because of our stop and was re-issued. */
  rearmed: boolean;
  /** Signals that arrived while we held the thread and were delivered (never dropped). */
  signalsDelivered: number;
  /** Distinct signals that arrived while the thread's signals were blocked for the injection; delivered once it runs again. */
  signalsDeferred: number;
  /** True when the process was already stopped (SIGSTOP) before; it is left stopped. */
  wasStopped: boolean;
  /** The whole process was held in a group stop during the session. */
  groupStopped: boolean;
  /** Other threads whose EINTR (from our group stop) was turned back into their call. */
  otherThreadsRearmed: number;
}

/** Errors thrown by the addon carry these fields. */
export interface NativeErrorFields {
  code: string; // errno name, e.g. "EPERM", "ESRCH"
  errno: number;
  stage: "attach" | "interrupt" | "getregs" | "inject" | "restore" | "detach" | "prlimit" | "arch" | "journal" | "seccomp" | "wait" | "flock";
  pid: number;
  tid: number;
  /** False when the target may still hold injected state: the journal stays for recovery. */
  journalRemoved?: boolean;
}

export interface Rlimit {
  /** RLIM_INFINITY is 2^64-1. */
  soft: bigint;
  hard: bigint;
}

export interface NativeAddon {
  arch: string;
  syscalls: { mlock2: number; munlock: number; mlockall: number; munlockall: number };
  /** Size of the raw register block in a journal. */
  regsSize: number;
  runBatch(req: BatchRequest): Promise<BatchReply>;
  getMemlockLimit(pid: number): Rlimit;
  /** Sets the target's RLIMIT_MEMLOCK and returns the previous value. */
  setMemlockLimit(pid: number, limit: Rlimit): Rlimit;
  /** flock(2) with LOCK_NB: true when taken, false when someone holds a conflicting lock. */
  tryFlock(fd: number, mode: "exclusive" | "shared" | "unlock"): boolean;
}

export const RLIM_INFINITY = (1n << 64n) - 1n;
export const MCL_CURRENT = 1;
export const MCL_FUTURE = 2;
export const MCL_ONFAULT = 4;
export const MLOCK_ONFAULT = 1;

function findAddon(): string {
  const candidates: string[] = [];
  if (process.env.LOCKMEM_ADDON) candidates.push(process.env.LOCKMEM_ADDON);
  // The agent bundle ships the addon next to the single JS file.
  candidates.push(path.join(__dirname, "lockmem.node"));
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    candidates.push(path.join(dir, "build", "Release", "lockmem.node"));
    if (fs.existsSync(path.join(dir, "package.json")) || path.dirname(dir) === dir) break;
  }
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) {
    throw new Error(
      `lockmem native addon not found (looked in ${candidates.join(", ")}); run \`npm run build:native\``,
    );
  }
  return found;
}

let cached: NativeAddon | undefined;

/** Loads the addon on first use, so that pure-logic modules never need it. */
export function native(): NativeAddon {
  if (!cached) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(findAddon()) as NativeAddon;
  }
  return cached;
}
