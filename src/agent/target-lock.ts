// Serialises agents that change the same target: one lock file per target pid under
// /run/lockmem, held with flock(2).
//
// Why flock and not an O_EXCL pid file: a flock belongs to the open file description, so
// the kernel drops it the moment the agent dies (SIGKILL, an SSH session torn down, OOM),
// with no stale-lock detection, no pid-reuse question and no race between two agents
// "breaking" the same stale file. Node has no flock binding, so the agent opens the file
// itself (O_CLOEXEC, as libuv always does) and lets util-linux `flock(1)` take the lock on
// that very descriptor, passed as fd 3: the lock stays with our open file description after
// flock(1) exits and is released when we close it or die. Lock files are never unlinked
// (unlinking a flock file races with a waiter that opened it); /run is cleared at boot.
import { spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { LockError } from "../errors";

export interface TargetLockOptions {
  /** Give up after this long (ms). 0: fail at once if another agent holds it. */
  waitMs: number;
  /** What the holder is doing, written into the file for whoever has to wait. */
  op: string;
  /** Lock directory; default /run/lockmem for root, a per-user runtime directory otherwise. */
  dir?: string;
}

export interface HeldTargetLock {
  pids: number[];
  release(): void;
}

/** Where the flock(1) binary lives on the hosts we support (util-linux, essential everywhere). */
const FLOCK_CANDIDATES = ["/usr/bin/flock", "/bin/flock", "/usr/sbin/flock", "/sbin/flock"];

function flockBinary(): string {
  const found = FLOCK_CANDIDATES.find((c) => fs.existsSync(c));
  if (!found) {
    throw new LockError({
      code: "EINTERNAL",
      stage: "serialise",
      message: `flock(1) not found (looked in ${FLOCK_CANDIDATES.join(", ")})`,
      hint: "install util-linux on the host; lockmem uses it to serialise agents working on one process",
    });
  }
  return found;
}

export function defaultLockDir(): string {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return "/run/lockmem";
  const runtime = process.env.XDG_RUNTIME_DIR ?? `/run/user/${uid}`;
  return fs.existsSync(runtime) ? path.join(runtime, "lockmem") : `/tmp/lockmem-${uid}`;
}

/** Creates the lock directory 0700, and refuses one that someone else could write into. */
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

type FlockOutcome = "held" | "busy" | "no-timer";

/** Runs `flock -x (-w SECS | -n) 3` on our descriptor. */
function runFlock(fd: number, waitMs: number): Promise<FlockOutcome> {
  const args = waitMs <= 0 ? ["-x", "-n", "3"] : ["-x", "-w", (waitMs / 1000).toFixed(3), "3"];
  return new Promise((resolve, reject) => {
    const child = spawn(flockBinary(), args, { stdio: ["ignore", "ignore", "pipe", fd] });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", (e) => reject(fsError(e, "running flock(1)")));
    child.on("close", (code) => {
      if (code === 0) resolve("held");
      else if (code === 1) resolve("busy");
      // -w needs a POSIX timer; timer_create fails with EAGAIN when the user's queued-signal
      // quota (RLIMIT_SIGPENDING, shared by all processes of that uid) is used up.
      else if (waitMs > 0 && /timer/.test(stderr)) resolve("no-timer");
      else reject(new LockError({ code: "EINTERNAL", stage: "serialise", message: `flock(1) failed (exit ${code}): ${stderr.trim()}` }));
    });
  });
}

/** Takes the flock within waitMs: true once held, false when the time ran out. */
async function flockFd(fd: number, waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  const first = await runFlock(fd, waitMs);
  if (first !== "no-timer") return first === "held";
  // Without a timer, poll with non-blocking attempts until the deadline.
  for (;;) {
    if ((await runFlock(fd, 0)) === "held") return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await new Promise((r) => setTimeout(r, Math.min(100, left)));
  }
}

function holderOf(file: string): string {
  try {
    const info = JSON.parse(fs.readFileSync(file, "utf8")) as { pid?: number; op?: string; since?: string };
    return `lockmem agent pid ${info.pid} (${info.op}, since ${info.since})`;
  } catch {
    return "another lockmem agent";
  }
}

async function lockOne(dir: string, pid: number, deadline: number, op: string): Promise<number> {
  const file = path.join(dir, `${pid}.lock`);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  } catch (e) {
    throw fsError(e, `opening ${file}`);
  }
  const waitMs = Math.max(0, deadline - Date.now());
  let held: boolean;
  try {
    held = await flockFd(fd, waitMs);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  if (!held) {
    fs.closeSync(fd);
    throw new LockError({
      code: "EBUSY",
      pid,
      stage: "serialise",
      message: `process ${pid} is busy: ${holderOf(file)} is changing it (lock file ${file}); gave up after waiting ${waitMs} ms`,
      hint: "retry when that operation has finished, or give a longer waitMs; the lock is released as soon as that agent exits, even if it is killed",
    });
  }
  const info = JSON.stringify({ pid: process.pid, op, since: new Date().toISOString() });
  fs.ftruncateSync(fd, 0);
  fs.writeSync(fd, info, 0);
  return fd;
}

/**
 * Takes the lock of every pid (ascending, so two agents never deadlock), waiting at most
 * `waitMs` in total. Throws EBUSY naming the holder when the wait runs out.
 */
export async function lockTargets(pids: number[], opts: TargetLockOptions): Promise<HeldTargetLock> {
  const dir = opts.dir ?? defaultLockDir();
  ensureDir(dir);
  const sorted = [...new Set(pids)].sort((a, b) => a - b);
  const deadline = Date.now() + opts.waitMs;
  const fds: number[] = [];
  const release = (): void => {
    for (const fd of fds.splice(0)) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed: nothing left to release
      }
    }
  };
  try {
    for (const pid of sorted) fds.push(await lockOne(dir, pid, deadline, opts.op));
  } catch (e) {
    release();
    throw e;
  }
  return { pids: sorted, release };
}
