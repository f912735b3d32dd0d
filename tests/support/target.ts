// Starts and drives tests/fixtures/target.c, the process that the real-process tests
// and the benchmarks lock and unlock.
//
// Targets are always daemonized (double fork): the code under test ptraces them, and a
// tracer whose process is also the target's parent loses ptrace stop notifications to
// libuv's waitpid(). So we never wait for a target with waitpid; its end is seen by
// polling /proc/PID with a deadline. Every started target is registered, and
// `stopAllTargets()` (call it from afterEach/afterAll) kills whatever a test left.
import { repoRoot } from "./repo";
import { execFile, execFileSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";

export type TargetMode = "spin" | "sleep" | "pipe" | "epoll" | "ppoll" | "idle" | "heartbeat";
/** epoll-block and futex threads block forever (epoll_wait(-1) on an empty set, FUTEX_WAIT). */
export type WorkerMode = "spin" | "sleep" | "epoll" | "epoll-block" | "futex";

export interface TargetOptions {
  /** What the main thread does (default "idle"). */
  mode?: TargetMode;
  /** sleep mode: length of each nanosleep (default 100). */
  sleepMs?: number;
  /** epoll mode: epoll_wait timeout (default -1). */
  epollTimeoutMs?: number;
  /** epoll mode: period of a timerfd in the epoll set, 0 = none (default 100). */
  epollTickMs?: number;
  /** heartbeat mode: pause between iterations, 0 = busy loop (default 0). */
  heartbeatUs?: number;
  /** Extra threads counting their progress (default 0). */
  threads?: number;
  threadMode?: WorkerMode;
  threadSleepMs?: number;
  /** Private anonymous rw- memory, touched so that it is resident. */
  anonMb?: number;
  protNoneMb?: number;
  /** Shared anonymous rw- memory, touched. */
  shmMb?: number;
  /** This many separate one-page r-x anonymous mappings (stats: one mapping of kind "small" spanning them). */
  smallMaps?: number;
  /** Files mapped r-- (touched). */
  files?: string[];
  /** Files mapped r-x (touched). */
  execFiles?: string[];
  /** A seccomp filter on mlock, mlock2, mlockall: kill the process, or fail with EPERM; or one that allows them (kills only on kexec_load). */
  seccomp?: "kill-mlock" | "errno-mlock" | "kill-other";
  /** After setup: RLIMIT_MEMLOCK = memlockKb (default 8192), then setgid/setuid (no CAP_IPC_LOCK). */
  dropPrivs?: { uid: number; gid?: number; memlockKb?: number };
  /** Stay root but without CAP_IPC_LOCK, soft RLIMIT_MEMLOCK = memlockKb (hard unchanged). */
  dropCapIpcLock?: { memlockKb: number };
  /** Signals to count ("USR1", "RTMIN+3", 40). Standard signals coalesce while pending; use RT signals to count exactly. */
  countSignals?: Array<string | number>;
  /** Install the counting handlers with SA_RESTART (default true). */
  saRestart?: boolean;
  /** The control thread waits in epoll_wait (sees EINTR on a ptrace stop) instead of accept/read. */
  controlEpoll?: boolean;
  /** Enable the in-process mlock/munlock/mlockall/munlockall commands. */
  inprocessMlock?: boolean;
  /** /proc/PID/comm of the target (at most 15 characters). */
  comm?: string;
  /** Extra text on the command line, to find the target with a --cmdline regex. */
  tag?: string;
  /** How long setup may take (default 30 s; touching GiBs of memory takes a while). */
  readyTimeoutMs?: number;
}

/** Reply to any control command; every reply has `ok`, failures an `error`. */
export interface ControlReply {
  ok: boolean;
  error?: string;
  [key: string]: unknown;
}

export interface TargetMapping {
  kind: "anon" | "prot_none" | "shm" | "file" | "extra" | "small";
  /** Hex addresses, as in /proc/PID/maps but with 0x. */
  start: string;
  end: string;
  bytes: number;
  perms: string;
  path?: string;
}

export interface WorkerStats {
  tid: number;
  mode: WorkerMode;
  progress: number;
  max_gap_us: number;
  eintr: number;
}

/** The `stats` reply (tests/fixtures/target.c, reply_stats()). */
export interface TargetStats extends ControlReply {
  pid: number;
  mode: TargetMode;
  uptime_ms: number;
  uid: number;
  euid: number;
  main: { tid: number; progress: number; max_gap_us: number };
  sleep: { sleep_ms: number; done: number; violations: number; eintr: number; max_oversleep_us: number; min_elapsed_us: number };
  pipe: { written: number; read: number; mismatches: number; eintr: number; ok: boolean };
  epoll: { timeout_ms: number; waits: number; events: number; timeouts: number; eintr: number; ticks: number };
  ppoll: { waits: number; eintr: number; mask_violations: number };
  /** Where the counting handler interrupted the main thread (x86_64): returning EINTR, about to enter a call again, elsewhere. */
  handlers: { at_eintr: number; at_reentry: number; elsewhere: number; last_rip: string; last_rax: number };
  heartbeat: { period_us: number; iterations: number; max_gap_us: number; max_stall_us: number };
  threads: WorkerStats[];
  control: { tid: number; epoll: boolean; commands: number; eintr: number };
  /** Received count per signal number, for the signals given in countSignals. */
  signals: Record<string, number>;
  mappings: TargetMapping[];
  vm_lck_kb: number;
  vm_rss_kb: number;
}

/** Reply of the in-process mlockall/munlockall/mlock/mlock2/munlock commands. */
export interface InProcessLockReply extends ControlReply {
  ret: number;
  errno: number;
  ns: number;
  /** mlockall/munlockall only: which thread made the call and, on the main thread, the heartbeat gap it caused. */
  thread?: "main" | "control";
  gap_us?: number;
  hb_max_gap_us?: number;
}

export interface Target {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat: with the pid, the identity of this process. */
  readonly startTime: string;
  readonly pidFile: string;
  readonly controlPath: string;
  /** stdout/stderr of the target. */
  readonly logPath: string;
  readonly argv: readonly string[];
  /** Send one control command; resolves with the parsed reply (also when ok is false). */
  control(command: string, timeoutMs?: number): Promise<ControlReply>;
  stats(timeoutMs?: number): Promise<TargetStats>;
  /** Restart the stall measurements of every loop; resolves once they have restarted. */
  resetStall(): Promise<void>;
  /** Make the pipe writer write `bytes` (default 64) bytes of the known pattern. */
  writePipe(bytes?: number): Promise<void>;
  /** Poll stats until `predicate` holds; rejects with the last stats at the deadline. */
  waitForStats(predicate: (s: TargetStats) => boolean, what: string, timeoutMs?: number): Promise<TargetStats>;
  /** True while this very process (pid and start time) exists and is not a zombie. */
  isAlive(): boolean;
  /** State letter of /proc/PID/stat (R, S, D, T, t, Z, ...), or null once the process is gone. */
  state(): string | null;
  /**
   * State letter of every thread (/proc/PID/task/TID/stat), by tid. ptrace stops one
   * thread at a time, so "never left stopped" must look at all of them ('t' or 'T').
   */
  threadStates(): Map<number, string>;
  /** Resolve once the process is gone (or a zombie); reject at the deadline. */
  waitForExit(timeoutMs?: number): Promise<void>;
  /** SIGKILL (by pid, after checking the start time) and wait until the process is gone. */
  stop(timeoutMs?: number): Promise<void>;
}

const DEFAULT_CONTROL_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------- waiting

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/** Poll `condition` until it returns a truthy value; reject with `what` at the deadline. */
export async function waitUntil<T>(
  condition: () => T | Promise<T>,
  what: string,
  { timeoutMs = 10_000, intervalMs = 20 }: WaitOptions = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) {
        return value as NonNullable<T>;
      }
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const cause = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// ---------------------------------------------------------------- build

export function workDir(): string {
  return path.join(repoRoot(), "tests", ".work");
}

const CFLAGS = ["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"];
let builtBinary: string | undefined;

/**
 * Path of the compiled target, built on first use (and again when target.c is newer).
 * Several jest workers may build at once: each compiles to its own file and renames it
 * into place, so nobody ever executes a half-written binary.
 */
export function targetBinary(): string {
  if (builtBinary) {
    return builtBinary;
  }
  const source = path.join(repoRoot(), "tests", "fixtures", "target.c");
  const binDir = path.join(workDir(), "bin");
  const binary = path.join(binDir, "target");
  const fresh = fs.existsSync(binary) && fs.statSync(binary).mtimeMs >= fs.statSync(source).mtimeMs;
  if (!fresh) {
    fs.mkdirSync(binDir, { recursive: true });
    const tmp = `${binary}.${process.pid}.${crypto.randomBytes(4).toString("hex")}`;
    try {
      execFileSync("gcc", [...CFLAGS, "-o", tmp, source], { stdio: ["ignore", "pipe", "pipe"] });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? "";
      throw new Error(`building the test target failed: gcc ${CFLAGS.join(" ")} ${source}\n${stderr}`);
    }
    fs.renameSync(tmp, binary);
  }
  builtBinary = binary;
  return binary;
}

// ---------------------------------------------------------------- /proc

interface ProcStat {
  state: string;
  startTime: string;
}

function readProcStat(pid: number, tid?: number): ProcStat | null {
  let text: string;
  try {
    text = fs.readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, "utf8");
  } catch {
    return null;
  }
  // comm (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0], startTime: fields[19] };
}

// ---------------------------------------------------------------- options -> argv

function targetArgs(opts: TargetOptions, files: { control: string; pidFile: string; log: string }): string[] {
  const args: string[] = ["--daemonize", "--control", files.control, "--pidfile", files.pidFile, "--log", files.log];
  const num = (flag: string, value: number | undefined): void => {
    if (value !== undefined) {
      if (!Number.isInteger(value)) {
        throw new TypeError(`${flag}: expected an integer, got ${value}`);
      }
      args.push(flag, String(value));
    }
  };
  if (opts.mode) args.push("--mode", opts.mode);
  num("--sleep-ms", opts.sleepMs);
  num("--epoll-timeout-ms", opts.epollTimeoutMs);
  num("--epoll-tick-ms", opts.epollTickMs);
  num("--heartbeat-us", opts.heartbeatUs);
  num("--threads", opts.threads);
  if (opts.threadMode) args.push("--thread-mode", opts.threadMode);
  num("--thread-sleep-ms", opts.threadSleepMs);
  num("--anon-mb", opts.anonMb);
  num("--prot-none-mb", opts.protNoneMb);
  num("--shm-mb", opts.shmMb);
  num("--small-maps", opts.smallMaps);
  for (const f of opts.files ?? []) args.push("--file", path.resolve(f));
  for (const f of opts.execFiles ?? []) args.push("--file-x", path.resolve(f));
  if (opts.seccomp) args.push(`--seccomp-${opts.seccomp}`);
  if (opts.dropPrivs) {
    num("--drop-privs", opts.dropPrivs.uid);
    num("--drop-gid", opts.dropPrivs.gid);
    num("--memlock-kb", opts.dropPrivs.memlockKb);
  }
  if (opts.dropCapIpcLock) {
    args.push("--drop-cap-ipc-lock");
    num("--memlock-kb", opts.dropCapIpcLock.memlockKb);
  }
  if (opts.countSignals?.length) args.push("--count-signals", opts.countSignals.join(","));
  if (opts.saRestart === false) args.push("--no-sa-restart");
  if (opts.controlEpoll) args.push("--control-epoll");
  if (opts.inprocessMlock) args.push("--inprocess-mlock");
  if (opts.comm !== undefined) args.push("--comm", opts.comm);
  if (opts.tag !== undefined) args.push("--tag", opts.tag);
  return args;
}

// ---------------------------------------------------------------- control channel

async function sendCommand(socketPath: string, command: string, timeoutMs: number): Promise<ControlReply> {
  if (command.includes("\n")) {
    throw new TypeError(`control command must be one line: ${JSON.stringify(command)}`);
  }
  // A full accept backlog makes connect() fail with EAGAIN on Unix sockets: retry until the deadline.
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await sendCommandOnce(socketPath, command, Math.max(deadline - Date.now(), 1));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN" || Date.now() >= deadline) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function sendCommandOnce(socketPath: string, command: string, timeoutMs: number): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path: socketPath });
    let data = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`control command "${command}" to ${socketPath}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding("utf8");
    sock.on("connect", () => sock.write(`${command}\n`));
    sock.on("data", (chunk: string) => {
      data += chunk;
      const nl = data.indexOf("\n");
      if (nl < 0) {
        return;
      }
      clearTimeout(timer);
      sock.end();
      try {
        resolve(JSON.parse(data.slice(0, nl)) as ControlReply);
      } catch {
        reject(new Error(`control command "${command}": reply is not JSON: ${data.slice(0, nl)}`));
      }
    });
    sock.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`control command "${command}" to ${socketPath}: ${err.message}`), { code: err.code }));
    });
    sock.on("close", () => {
      clearTimeout(timer);
      if (!data.includes("\n")) {
        reject(new Error(`control command "${command}": connection closed without a reply`));
      }
    });
  });
}

// ---------------------------------------------------------------- registry

const liveTargets = new Set<TargetProcess>();

// Last resort if the test process exits with targets still running (a crashed test,
// a bench interrupted): kill them synchronously, by pid, after checking identity.
function killLiveTargetsSync(): void {
  for (const t of liveTargets) {
    if (t.isAlive()) {
      try {
        process.kill(t.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

function register(t: TargetProcess): void {
  if (liveTargets.size === 0) {
    process.on("exit", killLiveTargetsSync);
  }
  liveTargets.add(t);
}

function unregister(t: TargetProcess): void {
  liveTargets.delete(t);
  if (liveTargets.size === 0) {
    process.removeListener("exit", killLiveTargetsSync);
  }
}

/** Stop every target started by this process that is still registered (use in afterEach/afterAll). */
export async function stopAllTargets(): Promise<void> {
  const errors: string[] = [];
  await Promise.all(
    [...liveTargets].map((t) =>
      t.stop().catch((err: Error) => {
        errors.push(err.message);
      }),
    ),
  );
  if (errors.length) {
    throw new Error(`stopping targets failed:\n${errors.join("\n")}`);
  }
}

// ---------------------------------------------------------------- target

class TargetProcess implements Target {
  constructor(
    readonly pid: number,
    readonly startTime: string,
    readonly dir: string,
    readonly pidFile: string,
    readonly controlPath: string,
    readonly logPath: string,
    readonly argv: readonly string[],
  ) {}

  control(command: string, timeoutMs = DEFAULT_CONTROL_TIMEOUT_MS): Promise<ControlReply> {
    return sendCommand(this.controlPath, command, timeoutMs).catch((err: Error) => {
      throw new Error(`target ${this.pid} (state ${this.state() ?? "gone"}): ${err.message}`);
    });
  }

  private async checked(command: string, timeoutMs?: number): Promise<ControlReply> {
    const reply = await this.control(command, timeoutMs);
    if (!reply.ok) {
      throw new Error(`target ${this.pid}: "${command}" failed: ${reply.error ?? JSON.stringify(reply)}`);
    }
    return reply;
  }

  async stats(timeoutMs?: number): Promise<TargetStats> {
    return (await this.checked("stats", timeoutMs)) as TargetStats;
  }

  async resetStall(): Promise<void> {
    const reply = await this.checked("reset-stall");
    if (reply.acked !== true) {
      throw new Error(`target ${this.pid}: reset-stall was not acknowledged by every loop (is a thread stopped?)`);
    }
  }

  async writePipe(bytes = 64): Promise<void> {
    await this.checked(`write-pipe ${bytes}`);
  }

  async waitForStats(predicate: (s: TargetStats) => boolean, what: string, timeoutMs = 10_000): Promise<TargetStats> {
    let last: TargetStats | undefined;
    try {
      return await waitUntil(
        async () => {
          last = await this.stats();
          return predicate(last) ? last : undefined;
        },
        what,
        { timeoutMs },
      );
    } catch (err) {
      throw new Error(`target ${this.pid}: ${(err as Error).message}; last stats: ${JSON.stringify(last)}`);
    }
  }

  state(): string | null {
    const stat = readProcStat(this.pid);
    return stat && stat.startTime === this.startTime ? stat.state : null;
  }

  isAlive(): boolean {
    const s = this.state();
    return s !== null && s !== "Z" && s !== "X";
  }

  threadStates(): Map<number, string> {
    const states = new Map<number, string>();
    if (this.state() === null) {
      return states;
    }
    let tids: string[];
    try {
      tids = fs.readdirSync(`/proc/${this.pid}/task`);
    } catch {
      return states;
    }
    for (const tid of tids) {
      const stat = readProcStat(this.pid, Number(tid));
      if (stat) states.set(Number(tid), stat.state);
    }
    return states;
  }

  async waitForExit(timeoutMs = 10_000): Promise<void> {
    await waitUntil(() => !this.isAlive(), `target ${this.pid} to exit`, { timeoutMs });
  }

  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.isAlive()) {
      try {
        process.kill(this.pid, "SIGKILL");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
      }
    }
    // A zombie counts as gone: its parent is init, which reaps on its own schedule.
    await waitUntil(() => !this.isAlive(), `target ${this.pid} to exit after SIGKILL`, { timeoutMs });
    unregister(this);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

let sequence = 0;

function makeTargetDir(): string {
  const base = path.join(workDir(), "targets");
  fs.mkdirSync(base, { recursive: true });
  const dir = fs.mkdtempSync(path.join(base, `${process.pid}-${++sequence}-`));
  // sun_path holds 107 bytes; a deep checkout would not fit, /tmp does.
  if (Buffer.byteLength(path.join(dir, "control.sock")) < 100) {
    return dir;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-target-"));
}

/** Start a daemonized target and resolve once its setup is complete (all mappings, threads, filters in place). */
export async function startTarget(opts: TargetOptions = {}): Promise<Target> {
  const binary = targetBinary();
  const dir = makeTargetDir();
  const files = { control: path.join(dir, "control.sock"), pidFile: path.join(dir, "target.pid"), log: path.join(dir, "target.log") };
  const args = targetArgs(opts, files);
  const timeoutMs = opts.readyTimeoutMs ?? 30_000;

  // The launched process exits as soon as the daemon reports "ready pid=N" (or an error).
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(binary, args, { timeout: timeoutMs, killSignal: "SIGKILL" }, (err, out, errOut) => {
      if (err) {
        const log = fs.existsSync(files.log) ? fs.readFileSync(files.log, "utf8") : "";
        fs.rmSync(dir, { recursive: true, force: true });
        reject(new Error(`starting test target failed: ${binary} ${args.join(" ")}\n${errOut}${log}`));
      } else {
        resolve(out);
      }
    });
  });
  const match = /^ready pid=(\d+)$/m.exec(stdout);
  if (!match) {
    throw new Error(`test target did not report ready: ${JSON.stringify(stdout)}`);
  }
  const pid = Number(match[1]);
  const stat = readProcStat(pid);
  if (!stat) {
    throw new Error(`test target ${pid} reported ready but is gone (log: ${files.log})`);
  }
  const target = new TargetProcess(pid, stat.startTime, dir, files.pidFile, files.control, files.log, [binary, ...args]);
  register(target);
  return target;
}

/** A file of `bytes` bytes (deterministic content) for the --file mappings. */
export function createDataFile(bytes: number, name = `data-${process.pid}-${++sequence}.bin`): string {
  const dir = path.join(workDir(), "files");
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  const data = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) data[i] = (i * 7 + 1) & 0xff;
  fs.writeFileSync(file, data);
  return file;
}
