// One lockmem per target, whoever starts it: the CLI, the library, an agent, `recover`,
// the recovery at the start of lock/unlock and the guardian all take the same per-target
// lock before they touch a process, so that recovery never runs beside a live session
// (seen without it: live journals deleted, a held target continued before its registers
// were saved, and three targets left stopped on injected registers).
//
// The lock is flock(2) on <state dir>/locks/<pid>.lock. A flock belongs to the open file
// description, so the kernel drops it the moment its holder dies (SIGKILL, an SSH session
// torn down, OOM): no stale-lock detection, no pid-reuse question, and a journal whose
// target lock is free provably has no live owner. Lock files are never unlinked
// while anyone may hold them; those of processes that are gone are pruned under their own
// lock by `recover` and the guardians, and a waiter that locked a pruned file retries.
//
// Within one process, flocks taken through different descriptors conflict like any
// others, which serialises concurrent requests of one agent; an operation that already
// holds a pid's lock (the agent's request, then the library call inside it) is known
// through AsyncLocalStorage and does not take it again.
import { AsyncLocalStorage } from "async_hooks";
import * as fs from "fs";
import * as path from "path";
import { LockError } from "./errors";
import { native } from "./native";
import { secureStateDir } from "./state-dir";

export interface TargetLockOptions {
  /** Give up after this long (ms). 0: fail at once if someone else holds it. */
  waitMs: number;
  /** What the holder is doing, written into the file for whoever has to wait. */
  op: string;
  /** Lock directory; default <state dir>/locks. */
  dir?: string;
}

export interface HeldTargetLock {
  pids: number[];
  release(): void;
}

/** How long lock, unlock and recovery wait for another lockmem working on the same process. */
export const DEFAULT_TARGET_WAIT_MS = 30_000;

const heldHere = new AsyncLocalStorage<ReadonlySet<string>>();

export function defaultLockDir(): string {
  return secureStateDir("locks");
}

/** A lock directory given explicitly (tests): created 0700, refused if someone else could write it. */
function ensureDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw fsError(e, `creating the lock directory ${dir}`);
  }
  const st = fs.lstatSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== uid) {
    throw new LockError({
      code: "EPERM",
      stage: "serialise",
      message: `lock directory ${dir} is not a directory owned by uid ${uid}`,
      hint: `remove ${dir}; lockmem recreates it with mode 0700`,
    });
  }
  if ((st.mode & 0o777) !== 0o700) fs.chmodSync(dir, 0o700);
}

function fsError(e: unknown, doing: string): LockError {
  const err = e as NodeJS.ErrnoException;
  return new LockError({
    code: err.code === "EACCES" || err.code === "EPERM" ? "EPERM" : "EINTERNAL",
    stage: "serialise",
    message: `${doing}: ${err.message}`,
  });
}

function lockDirFor(opts: Pick<TargetLockOptions, "dir">): string {
  if (opts.dir === undefined) return defaultLockDir();
  ensureDir(opts.dir);
  return opts.dir;
}

function lockPath(dir: string, pid: number): string {
  return path.join(dir, `${pid}.lock`);
}

function holderOf(file: string): string {
  try {
    const info = JSON.parse(fs.readFileSync(file, "utf8")) as { pid?: unknown; op?: unknown; since?: unknown };
    if (typeof info.pid !== "number" || typeof info.op !== "string" || typeof info.since !== "string") throw new Error("not ours");
    return `lockmem process ${info.pid} (${info.op.slice(0, 40)}, since ${info.since.slice(0, 40)})`;
  } catch {
    return "another lockmem process";
  }
}

function openLockFile(file: string): number {
  try {
    return fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  } catch (e) {
    throw fsError(e, `opening ${file}`);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** True when `fd` still is the file at `file` (not unlinked by a prune meanwhile). */
function stillLinked(fd: number, file: string): boolean {
  try {
    const a = fs.fstatSync(fd);
    const b = fs.lstatSync(file);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/** Takes the flock of `file` on a new descriptor by the deadline, or throws EBUSY naming the holder. */
async function acquire(file: string, pid: number, deadline: number, op: string): Promise<number> {
  for (;;) {
    const fd = await acquireOnce(file, pid, deadline, op);
    // A lock file is unlinked only by its holder (pruneStaleLocks); whoever waited on the
    // old inode got a lock nobody else will ever ask for: open the path again.
    if (stillLinked(fd, file)) return fd;
    fs.closeSync(fd);
  }
}

async function acquireOnce(file: string, pid: number, deadline: number, op: string): Promise<number> {
  const started = Date.now();
  const fd = openLockFile(file);
  try {
    // Polled (Node has no blocking flock off the main thread): 1 ms, doubling to 50 ms.
    for (let delay = 1; !native().tryFlock(fd, "exclusive"); delay = Math.min(delay * 2, 50)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new LockError({
          code: "EBUSY",
          pid,
          stage: "serialise",
          message: `process ${pid} is busy: ${holderOf(file)} is working on it (lock file ${file}); gave up after waiting ${Date.now() - started} ms`,
          hint: "retry when that operation has finished, or allow a longer wait; the lock is released as soon as that process exits, even if it is killed",
        });
      }
      await sleep(Math.min(delay, left));
    }
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  const info = JSON.stringify({ pid: process.pid, op, since: new Date().toISOString() });
  fs.ftruncateSync(fd, 0);
  fs.writeSync(fd, info, 0);
  return fd;
}

function closeAll(fds: number[]): void {
  for (const fd of fds.splice(0)) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed: nothing left to release
    }
  }
}

/**
 * Takes the lock of every pid (ascending, so two lockmem processes never deadlock) on new
 * descriptors, waiting at most `waitMs` in total. Throws EBUSY naming the holder when the
 * wait runs out.
 */
export async function lockTargets(pids: number[], opts: TargetLockOptions): Promise<HeldTargetLock> {
  const dir = lockDirFor(opts);
  const sorted = [...new Set(pids)].sort((a, b) => a - b);
  const deadline = Date.now() + opts.waitMs;
  const fds: number[] = [];
  try {
    for (const pid of sorted) fds.push(await acquire(lockPath(dir, pid), pid, deadline, opts.op));
  } catch (e) {
    closeAll(fds);
    throw e;
  }
  return { pids: sorted, release: () => closeAll(fds) };
}

/**
 * Runs `fn` holding the lock of every pid; locks this operation already holds (an agent
 * request around a library call) are not taken twice.
 */
export async function withTargetLocks<T>(pids: number[], opts: TargetLockOptions, fn: () => Promise<T>): Promise<T> {
  const dir = lockDirFor(opts);
  const mine = heldHere.getStore() ?? new Set<string>();
  const needed = [...new Set(pids)].filter((pid) => !mine.has(lockPath(dir, pid)));
  if (needed.length === 0) return fn();
  const held = await lockTargets(needed, { ...opts, dir });
  try {
    return await heldHere.run(new Set([...mine, ...needed.map((pid) => lockPath(dir, pid))]), fn);
  } finally {
    held.release();
  }
}

/**
 * Removes the lock files of processes that no longer exist, each under its own lock (so
 * never from under a holder; a waiter on a removed file notices, see acquire()).
 */
export function pruneStaleLocks(dir = defaultLockDir()): number {
  let removed = 0;
  for (const name of fs.readdirSync(dir)) {
    const m = /^([0-9]{1,10})\.lock$/.exec(name);
    if (!m || fs.existsSync(`/proc/${m[1]}`)) continue;
    const file = path.join(dir, name);
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW);
    } catch {
      continue;
    }
    try {
      if (native().tryFlock(fd, "exclusive") && stillLinked(fd, file)) {
        fs.unlinkSync(file);
        removed++;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return removed;
}

/**
 * Whether a live lockmem process holds the lock of pid now: this operation itself counts
 * unless `othersOnly` (then only someone else's hold does).
 */
export function isTargetLocked(pid: number, dir = defaultLockDir(), othersOnly = false): boolean {
  const file = lockPath(dir, pid);
  if (heldHere.getStore()?.has(file)) return !othersOnly;
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return false;
  }
  try {
    const free = native().tryFlock(fd, "shared");
    return !free;
  } finally {
    fs.closeSync(fd);
  }
}
