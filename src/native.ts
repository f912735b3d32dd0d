// Typed view of the native addon (native/*.cc). The addon is the only code that calls
// ptrace(2) or prlimit(2); everything else (parsing, planning, validation) is TypeScript.
import * as fs from "fs";
import * as path from "path";
import { SHIPPED_ARCHES, platformName } from "./arch";
import { LockError, NativeError, NativeErrorInit } from "./errors";

/** One system call to run inside the target, with up to six arguments. */
export interface SyscallSpec {
  nr: number;
  args: bigint[];
}

/** A call to run in the target, and the call that reverts it if a later call of the batch fails. */
export interface SyscallOp extends SyscallSpec {
  undo?: SyscallSpec;
}

/** What every session needs: the target, where to find a syscall instruction, the calls. */
export interface SessionRequest {
  pid: number;
  /** The thread that executes the calls; mlock acts on the whole address space, so any thread will do. */
  tid: number;
  /** Address range of the target's [vdso], where a `syscall` instruction is found (no target memory is written). */
  vdsoStart: bigint;
  vdsoEnd: bigint;
  ops: SyscallOp[];
  /** Calls that return EINTR after a stop: other threads blocked in one are re-issued. */
  eintrSyscalls?: number[];
}

/** runBatch(): one crash-safe session. */
export interface BatchRequest extends SessionRequest {
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
}

/**
 * recover(): finishes the session of a run that died while our registers may still be in
 * the thread: the same session as runBatch() (held in a group stop, stopping at the first
 * failing call), with the journaled registers put back instead of the current ones.
 */
export interface RecoverRequest extends SessionRequest {
  /** The journal of the run that died (its .regs file): marked as the session goes, removed at the end. */
  journalPath: string;
  /** The register block it journaled. */
  regs: Buffer;
  /** Leave the process stopped: it was stopped before that run, or someone else stopped it meanwhile. */
  stayStopped: boolean;
  /** The thread's own signal mask, journaled by a run that blocked its signals. */
  sigmask?: bigint;
  /** The journal's calls= line: what that run saw blocked before its stop (arm64 re-arms from it). */
  blockedCalls?: string;
}

/**
 * undoStop(): a run died with no register of ours in the target (before any changed, or
 * after they were back): re-issue the calls its stop interrupted, in every thread, then
 * continue the process.
 */
export interface UndoStopRequest {
  pid: number;
  eintrSyscalls?: number[];
  /** The journal's calls= line: what that run saw blocked before its stop (arm64 re-arms from it). */
  blockedCalls?: string;
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
  /** The class every native failure is an instance of; handed over once, at load (bind()). */
  setErrorClass(errorClass: new (init: NativeErrorInit) => NativeError): void;
  runBatch(req: BatchRequest): Promise<BatchReply>;
  recover(req: RecoverRequest): Promise<BatchReply>;
  undoStop(req: UndoStopRequest): Promise<{ otherThreadsRearmed: number }>;
  /** Sets the target's RLIMIT_MEMLOCK (prlimit) and returns the previous value. Reading it needs no addon (src/proc/limits.ts). */
  setMemlockLimit(pid: number, limit: Rlimit): Rlimit;
  /** flock(2) with LOCK_NB: true when taken, false when someone holds a conflicting lock. */
  tryFlock(fd: number, mode: "exclusive" | "shared" | "unlock"): boolean;
  /**
   * Forks the guardian's stub (native/guardian_stub.h): it waits on a pipe and executes
   * `argv` (this process's own executable, with `env`) only if this process dies without
   * writing "D" to `fd` first. `fd` is the pipe's write end (close-on-exec).
   */
  startGuardianStub(req: { argv: string[]; env: string[] }): { pid: number; fd: number };
}

export const RLIM_INFINITY = (1n << 64n) - 1n;
export const MCL_CURRENT = 1;
export const MCL_FUTURE = 2;
export const MCL_ONFAULT = 4;
export const MLOCK_ONFAULT = 1;

/**
 * Set to true by the agent bundle's build (esbuild `define`, provider/agent/bundle.ts); an
 * undeclared global everywhere else. The bundle runs only the addon its bootstrap verified.
 */
declare const LOCKMEM_AGENT_BUNDLE: boolean | undefined;
export const IN_AGENT_BUNDLE = typeof LOCKMEM_AGENT_BUNDLE !== "undefined" && LOCKMEM_AGENT_BUNDLE === true;

/** The prebuilt addons this package ships (prebuilds/<platform>-<arch>/, node-gyp-build's layout). */
export const PREBUILT_PLATFORMS = SHIPPED_ARCHES.map(platformName);

type NodeGypBuild = ((dir: string) => unknown) & { resolve(dir: string): string };

/** The root of this package (the folder of its package.json), from src/ or dist/src/. */
function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, "utf8")) as { name?: string }).name === "pulumi-lockmem") return dir;
    if (path.dirname(dir) === dir) throw new Error(`cannot find the pulumi-lockmem package root above ${__dirname}`);
  }
}

function unavailable(detail: string): LockError {
  return new LockError({
    code: "EARCH",
    message: `lockmem's native addon is not available on this machine (${process.platform}-${process.arch}): ${detail}`,
    hint:
      `processes on this machine cannot be locked from here (the package ships addons for ${PREBUILT_PLATFORMS.join(", ")}); ` +
      "manage a Linux host over SSH instead: give the resource a `connection` (it may point at this machine's own sshd). " +
      "In a checkout of lockmem, `npm run build:native` builds the addon from source",
  });
}

/**
 * Why this machine cannot load the package's addon, or undefined when it can: checked
 * without loading it, so that a controller on macOS or Windows, or on an architecture
 * without a prebuilt addon, still manages remote hosts and fails only for local targets.
 */
export function nativeUnavailable(): LockError | undefined {
  if (process.platform !== "linux") return unavailable("lockmem locks processes of Linux only");
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    (require("node-gyp-build") as NodeGypBuild).resolve(packageRoot());
    return undefined;
  } catch (e) {
    return unavailable((e as Error).message.split("\n")[0]);
  }
}

let cached: NativeAddon | undefined;

/** Hands the addon its error class (native/addon_errors.h): every native failure is a NativeError. */
function bind(addon: NativeAddon): NativeAddon {
  addon.setErrorClass(NativeError);
  cached = addon;
  return addon;
}

/**
 * The agent bundle hands over the addon it loaded from the bytes its bootstrap hashed
 * (src/agent/verified-addon.ts): from then on that one is used, and no file is looked up.
 */
export function useAddon(addon: NativeAddon): void {
  bind(addon);
}

/** Loads the addon on first use, so that pure-logic modules never need it. */
export function native(): NativeAddon {
  if (cached) return cached;
  if (IN_AGENT_BUNDLE) {
    // Never another file: the bundle's addon is the one its bootstrap checked, or none.
    throw new LockError({
      code: "EINTERNAL",
      message: "the lockmem agent bundle runs without the addon its bootstrap verified",
      hint: "start the agent with the command the provider gives it (it checks the files and loads the addon)",
    });
  }
  const why = nativeUnavailable();
  if (why) throw why;
  // node-gyp-build: build/Release in a checkout (`npm run build:native`), else the prebuilt
  // addon for this platform and arch under prebuilds/.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return bind((require("node-gyp-build") as NodeGypBuild)(packageRoot()) as NativeAddon);
}
