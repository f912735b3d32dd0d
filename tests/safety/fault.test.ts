// Fault injection: the `lockmem` CLI is killed with SIGKILL at every fault point of the
// injection (LOCKMEM_TEST_KILL_AT, native/fault.cc) and at random instants (a timer in
// this process), during lock and unlock, on every kind of target of the core tests.
// After each kill, recovery runs (`lockmem recover`, the library's recoverInterrupted, or
// the next lockmem operation on that pid) and the target is checked from /proc and from
// its own counters: alive, running (or still stopped if it was), not traced, its blocked
// calls completed correctly, its lock state the old or the new (never half), no journal
// left. Targets are reused across trials: each trial first puts its target in the state
// the operation starts from.
import { FAULT_POINTS, LOCKMEM_BIN, REPO } from "../support/safety";
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as api from "../../src/api";
import { recoverInterrupted } from "../../src/journal";
import { SelectionSpec } from "../../src/types";
import { startTarget, stopAllTargets, Target, TargetOptions, TargetStats, waitUntil, workDir } from "../support/target";
import { isLockedVma, isTraced, kernelMappings, KernelMapping } from "../support/smaps";
import { startStress, stopStress } from "../support/stress";

jest.setTimeout(20 * 60_000);
afterAll(stopAllTargets);
// Quiet, or under CPU stress in the second pass of scripts/test.sh (races show under load).
beforeAll(startStress);
afterAll(stopStress);

const bin = LOCKMEM_BIN;
const stateDir = path.join(workDir(), `state-fault-${process.pid}`);
const journalDir = path.join(stateDir, "journal");

const POINTS = FAULT_POINTS;

// glibc's SIGRTMIN + 2: real-time signals queue, so every one sent must be counted.
const SIGNAL = 34 + 2;

type Kind = "spin" | "sleep" | "pipe" | "epoll" | "threads" | "stopped" | "signals";
type Op = "lock" | "unlock";

const KINDS: Record<Kind, TargetOptions> = {
  spin: { mode: "spin", anonMb: 256 },
  // nanosleep must last its full duration across every stop.
  sleep: { mode: "sleep", sleepMs: 20, anonMb: 256 },
  // A reader blocked in read() must get the bytes written later, each exactly once.
  pipe: { mode: "pipe", anonMb: 256 },
  // Every thread waits in epoll_wait (no timeout): none may ever see EINTR.
  epoll: { mode: "epoll", epollTimeoutMs: -1, epollTickMs: 50, controlEpoll: true, anonMb: 256 },
  // Main thread in nanosleep, workers in epoll_wait.
  threads: { mode: "sleep", sleepMs: 20, threads: 3, threadMode: "epoll", threadSleepMs: 10, anonMb: 256 },
  // SIGSTOPped by its owner before lockmem comes: must stay stopped.
  stopped: { mode: "spin", threads: 2, threadMode: "sleep", threadSleepMs: 10, anonMb: 256 },
  // Receives a stream of queued RT signals through every trial: each one counted, none
  // lost, even when lockmem dies while it blocks the thread's signals for the injection.
  signals: { mode: "spin", anonMb: 256, countSignals: [SIGNAL] },
};

// Point trials lock the code (several mlock2 calls: a half state is possible); random
// trials lock the 256 MiB of resident anonymous memory, so the session is a good part of
// the CLI's run and a random instant often falls inside it.
const CODE: SelectionSpec = { permissions: ["r-x"] };
const ANON: SelectionSpec = { kinds: ["anon"] };
const RANDOM_PER_KIND_OP = 7;

// A seeded generator, so that a failing run can be replayed with LOCKMEM_FAULT_SEED.
const seed = Number(process.env.LOCKMEM_FAULT_SEED ?? Date.now() % 1_000_000);
let prng = seed >>> 0;
function random(): number {
  prng = (prng + 0x6d2b79f5) >>> 0;
  let t = prng;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

beforeAll(() => {
  if (!fs.existsSync(path.join(REPO, "dist", "src", "cli", "main.js"))) {
    throw new Error("dist/ is missing: run `npm run build:ts` (scripts/test.sh does)");
  }
  process.env.LOCKMEM_STATE_DIR = stateDir;
});

// ---------------------------------------------------------------- the CLI

interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function selectionArgs(sel: SelectionSpec): string[] {
  if (sel.permissions) return ["--perms", sel.permissions.join(",")];
  if (sel.kinds) return ["--kind", sel.kinds.join(",")];
  throw new Error(`no CLI flags for ${JSON.stringify(sel)}`);
}

/**
 * Runs the CLI. `killAfterJournalMs`: SIGKILL from here that long after the journal first
 * changes (inotify), i.e. at an instant inside the session rather than while Node starts.
 */
function runCli(args: string[], opts: { killAt?: string; killAfterJournalMs?: number } = {}): Promise<CliRun> {
  // The recovery paths under test here (library, CLI, next operation, a killed recovery)
  // run without the guardian, which would otherwise get there first; guardian.test.ts
  // covers the guardian at the same fault points.
  const env: NodeJS.ProcessEnv = { ...process.env, LOCKMEM_STATE_DIR: stateDir, LOCKMEM_TEST_NO_GUARDIAN: "1" };
  delete env.LOCKMEM_TEST_KILL_AT;
  if (opts.killAt) env.LOCKMEM_TEST_KILL_AT = opts.killAt;
  const started = process.hrtime.bigint();
  const child: ChildProcess = spawn(process.execPath, [bin, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d) => (stdout += d));
  child.stderr?.on("data", (d) => (stderr += d));
  let timer: NodeJS.Timeout | undefined;
  let watcher: fs.FSWatcher | undefined;
  const delay = opts.killAfterJournalMs;
  if (delay !== undefined) {
    fs.mkdirSync(journalDir, { recursive: true });
    watcher = fs.watch(journalDir, () => {
      watcher?.close();
      timer = setTimeout(() => child.kill("SIGKILL"), delay);
    });
  }
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      watcher?.close();
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    });
  });
}

// ---------------------------------------------------------------- the kernel's view

/** Journal files, of one target when `pid` is given (one failed trial must not fail the others). */
function journalEntries(pid?: number): string[] {
  try {
    return fs
      .readdirSync(journalDir)
      .filter((n) => pid === undefined || n.startsWith(`${pid}-`))
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/** What the journal said right after the kill: none, header only, stop recorded, registers saved, registers restored. */
function journalStage(pid?: number): string {
  const regs = journalEntries(pid).find((n) => n.endsWith(".regs"));
  if (regs === undefined) return journalEntries(pid).length ? "header" : "none";
  const text = fs.readFileSync(path.join(journalDir, regs), "utf8");
  if (/^restored=1$/m.test(text)) return "restored";
  // The addon lays the file out whole at the start, the register block as dashes.
  return /^regs=[0-9a-f]+$/m.test(text) ? "regs" : "begun";
}

const SPECIAL = /^\[(vdso|vvar|vsyscall)\]$/;

/** The mappings a selection covers, as the kernel lists them (independent of src/select.ts). */
function selected(maps: KernelMapping[], sel: SelectionSpec): KernelMapping[] {
  return maps.filter((m) => {
    if (SPECIAL.test(m.path)) return false;
    if (sel.permissions) return sel.permissions.includes(m.perms.slice(0, 3));
    // anon: private anonymous memory that is neither heap nor stack, and not PROT_NONE.
    return m.path === "" && m.perms.startsWith("rw") && m.perms.endsWith("p");
  });
}

type LockState = "locked" | "unlocked" | "half";

function lockState(pid: number, sel: SelectionSpec, only?: Set<string>): { state: LockState; detail: string } {
  const maps = selected(kernelMappings(pid), sel).filter((m) => !only || only.has(m.start.toString(16)));
  const locked = maps.filter(isLockedVma).length;
  const state: LockState = locked === 0 ? "unlocked" : locked === maps.length ? "locked" : "half";
  return { state, detail: `${locked}/${maps.length} locked: ${maps.map((m) => `${m.start.toString(16)}${isLockedVma(m) ? "L" : "-"}`).join(" ")}` };
}

/** Lock flags of the mappings outside the selection, by address (paths may gain " (deleted)"). */
function othersFingerprint(pid: number, sel: SelectionSpec): Map<string, string> {
  const maps = kernelMappings(pid);
  const inSel = new Set(selected(maps, sel).map((m) => m.start.toString(16)));
  const out = new Map<string, string>();
  for (const m of maps) {
    if (!inSel.has(m.start.toString(16))) out.set(m.start.toString(16), `${m.perms} ${isLockedVma(m) ? "locked" : "unlocked"}`);
  }
  return out;
}

function allThreads(t: Target, pred: (s: string) => boolean): boolean {
  const states = [...t.threadStates().values()];
  return states.length > 0 && states.every(pred);
}

const isStopped = (s: string): boolean => s === "T" || s === "t";

// ---------------------------------------------------------------- what each kind must show

/**
 * Waits until the target shows, from its own counters, that its work went on unharmed
 * since `before`. Counters are cumulative: each trial is judged on its own increments.
 */
async function checkWorkload(kind: Kind, t: Target, before: TargetStats): Promise<void> {
  const workerEintr = (s: TargetStats): string[] =>
    s.threads
      .map((th) => ({ tid: th.tid, n: th.eintr - (before.threads.find((b) => b.tid === th.tid)?.eintr ?? 0) }))
      .filter((x) => x.n !== 0)
      .map((x) => `${x.tid}: ${x.n}`);
  switch (kind) {
    case "spin":
    case "signals":
      await t.waitForStats((s) => s.main.progress > before.main.progress, "spin progress", 5000);
      return;
    case "sleep":
    case "threads": {
      const s = await t.waitForStats(
        (x) => x.sleep.done > before.sleep.done + 1 && x.threads.every((th) => th.progress > (before.threads.find((b) => b.tid === th.tid)?.progress ?? 0)),
        "sleeps and thread progress",
        5000,
      );
      if (s.sleep.violations !== before.sleep.violations) throw new Error(`a nanosleep ended early (${s.sleep.violations - before.sleep.violations} times)`);
      if (s.sleep.eintr !== before.sleep.eintr) throw new Error(`nanosleep returned EINTR ${s.sleep.eintr - before.sleep.eintr} times`);
      const eintr = workerEintr(s);
      if (eintr.length) throw new Error(`worker epoll_wait returned EINTR (${eintr.join(", ")})`);
      return;
    }
    case "pipe": {
      await t.writePipe(64);
      const s = await t.waitForStats((x) => x.pipe.read >= before.pipe.read + 64, "64 pipe bytes", 5000);
      if (s.pipe.read !== before.pipe.read + 64) throw new Error(`pipe: read ${s.pipe.read - before.pipe.read} bytes, wrote 64`);
      if (s.pipe.mismatches !== before.pipe.mismatches) throw new Error(`pipe: ${s.pipe.mismatches - before.pipe.mismatches} mismatched bytes`);
      if (s.pipe.eintr !== before.pipe.eintr) throw new Error(`pipe: read returned EINTR ${s.pipe.eintr - before.pipe.eintr} times`);
      return;
    }
    case "epoll": {
      const s = await t.waitForStats((x) => x.epoll.ticks > before.epoll.ticks, "an epoll tick", 5000);
      if (s.epoll.eintr !== before.epoll.eintr) throw new Error(`main epoll_wait returned EINTR ${s.epoll.eintr - before.epoll.eintr} times`);
      if (s.control.eintr !== before.control.eintr) throw new Error(`control thread epoll_wait returned EINTR ${s.control.eintr - before.control.eintr} times`);
      return;
    }
    case "stopped":
      return; // checked once it is continued, at the end of its trials
  }
}

// ---------------------------------------------------------------- trials

type Recovery = "cli" | "library" | "next-op";

interface Trial {
  kind: Kind;
  op: Op;
  /** A fault point, "random", or "recovery:<point>" (killed again while recovering). */
  point: string;
  killed: boolean;
  journal: string;
  recovery: Recovery;
  outcome?: "old" | "new";
  failures: string[];
}

const trials: Trial[] = [];

interface Setup {
  kind: Kind;
  t: Target;
  /** When, in a whole CLI run, the journal exists (ms after spawn): the session's window, by op. */
  window: Record<Op, { from: number; to: number; total: number }>;
  /** The "signals" kind: the stream sent to it while the trials run. */
  stream?: SignalStream;
}

interface SignalStream {
  stop: () => Promise<number>;
}

/** Sends SIGNAL to `pid` every couple of milliseconds until stopped (bounded by the RT queue). */
function signalStream(pid: number): SignalStream {
  let sent = 0;
  let running = true;
  const done = (async () => {
    while (running && sent < 30_000) {
      try {
        process.kill(pid, SIGNAL);
      } catch {
        break; // the target is gone: its trial reports that
      }
      sent++;
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return sent;
    },
  };
}

async function putInState(s: Setup, sel: SelectionSpec, want: "locked" | "unlocked"): Promise<void> {
  if (want === "locked") await api.lock({ target: { pid: s.t.pid }, mappings: sel });
  else await api.unlock({ target: { pid: s.t.pid }, mappings: sel });
  const now = lockState(s.t.pid, sel);
  if (now.state !== want) throw new Error(`setup: expected ${want}, got ${now.detail}`);
}

async function recover(s: Setup, how: Recovery, trial: Trial): Promise<void> {
  // A header torn by the kill is dropped silently (nothing had been touched yet).
  const hadJournal = journalEntries(s.t.pid).some((n) => n.endsWith(".regs"));
  if (how === "cli") {
    const r = await runCli(["recover", "--pid", String(s.t.pid), "--json"]);
    if (r.code !== 0) trial.failures.push(`lockmem recover exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  } else if (how === "library") {
    await recoverInterrupted(s.t.pid);
  } else {
    // An operation that changes nothing still recovers first, and says so.
    const r = await api.unlock({ target: { pid: s.t.pid }, mappings: { paths: ["/nonexistent/lockmem-fault-test"] } });
    const said = r.processes[0].warnings.some((w) => /recovered an interrupted lockmem run/.test(w));
    if (hadJournal && !said) trial.failures.push(`the next operation recovered without a warning: ${JSON.stringify(r.processes[0].warnings)}`);
  }
}

async function runTrial(s: Setup, op: Op, point: string, sel: SelectionSpec, how: Recovery, kill: { at?: string; afterJournalMs?: number; again?: string }): Promise<Trial> {
  const { t, kind } = s;
  const trial: Trial = { kind, op, point, killed: false, journal: "none", recovery: how, failures: [] };
  const oldState = op === "lock" ? "unlocked" : "locked";
  const newState = op === "lock" ? "locked" : "unlocked";
  await putInState(s, sel, oldState);
  const selAtStart = new Set(selected(kernelMappings(t.pid), sel).map((m) => m.start.toString(16)));
  const others = othersFingerprint(t.pid, sel);
  const before = kind === "stopped" ? undefined : await t.stats();

  const args = [op, "--pid", String(t.pid), ...selectionArgs(sel), "--json"];
  const run = await runCli(args, { killAt: kill.at, killAfterJournalMs: kill.afterJournalMs });
  trial.killed = run.signal === "SIGKILL";
  if (!trial.killed && run.code !== 0) trial.failures.push(`lockmem ${op} exited ${run.code ?? run.signal}: ${run.stderr.trim()}`);
  if (kill.again && trial.killed) {
    // Killed again, this time inside the recovery that the next run does first.
    const second = await runCli(args, { killAt: kill.again });
    if (second.signal !== "SIGKILL") trial.failures.push(`the second run was not killed at ${kill.again} (exit ${second.code}): ${second.stderr.trim()}`);
  }
  trial.journal = journalStage(t.pid);

  // The promise of the journal: while registers of ours may be in a thread (saved and not
  // restored), the process is group-stopped, never running on them.
  if (trial.journal === "regs") {
    try {
      await waitUntil(() => allThreads(t, isStopped), "every thread stopped", { timeoutMs: 2000, intervalMs: 5 });
    } catch {
      trial.failures.push(`registers journaled and not restored, but threads run: ${JSON.stringify([...t.threadStates()])}`);
    }
  }

  await recover(s, how, trial);

  if (!t.isAlive()) {
    trial.failures.push(`target is gone (state ${t.state()})`);
    return trial;
  }
  if (isTraced(t.pid)) trial.failures.push("target is still traced");
  const left = journalEntries(t.pid);
  if (left.length) trial.failures.push(`journal not empty: ${left.join(", ")}`);
  try {
    if (kind === "stopped") {
      await waitUntil(() => allThreads(t, (x) => x === "T"), "every thread back in the group stop", { timeoutMs: 2000, intervalMs: 5 });
    } else {
      await waitUntil(() => allThreads(t, (x) => !isStopped(x)), "every thread running", { timeoutMs: 2000, intervalMs: 5 });
    }
  } catch {
    trial.failures.push(`thread states ${JSON.stringify([...t.threadStates()])} (expected ${kind === "stopped" ? "stopped" : "running"})`);
  }
  const after = lockState(t.pid, sel, selAtStart);
  if (after.state === "half") trial.failures.push(`half locked: ${after.detail}`);
  else trial.outcome = after.state === oldState ? "old" : "new";
  if (!trial.killed && after.state !== newState) trial.failures.push(`not killed, yet the state is ${after.detail}`);
  const othersNow = othersFingerprint(t.pid, sel);
  for (const [addr, was] of others) {
    const now = othersNow.get(addr);
    if (now !== undefined && now !== was) trial.failures.push(`a mapping outside the selection changed: ${was} -> ${now}`);
  }
  if (before) {
    try {
      await checkWorkload(kind, t, before);
    } catch (err) {
      trial.failures.push((err as Error).message);
    }
  }
  return trial;
}

async function setUp(kind: Kind): Promise<Setup> {
  const t = await startTarget(KINDS[kind]);
  if (kind === "stopped") {
    process.kill(t.pid, "SIGSTOP");
    await waitUntil(() => allThreads(t, (x) => x === "T"), "the target to stop");
  }
  const s: Setup = { kind, t, window: { lock: { from: 0, to: 0, total: 0 }, unlock: { from: 0, to: 0, total: 0 } } };
  if (kind === "signals") s.stream = signalStream(t.pid);
  // Calibrate the random kills: most of a CLI run is Node starting and /proc reading, so
  // an instant drawn over the whole run would seldom fall inside the session. Watch
  // (inotify, no polling) when the journal appears and goes, and draw around that window.
  fs.mkdirSync(journalDir, { recursive: true });
  for (const op of ["lock", "unlock"] as const) {
    await putInState(s, ANON, op === "lock" ? "unlocked" : "locked");
    const events: number[] = [];
    const started = process.hrtime.bigint();
    const watcher = fs.watch(journalDir, () => events.push(Number(process.hrtime.bigint() - started) / 1e6));
    const r = await runCli([op, "--pid", String(t.pid), ...selectionArgs(ANON)]);
    watcher.close();
    if (r.code !== 0) throw new Error(`calibration ${op} failed: ${r.stderr}`);
    if (events.length === 0) throw new Error(`calibration ${op}: the journal never appeared`);
    s.window[op] = { from: Math.min(...events), to: Math.max(...events), total: r.ms };
  }
  console.log(`${kind}: session window (ms after spawn) lock ${JSON.stringify(s.window.lock)}, unlock ${JSON.stringify(s.window.unlock)}`);
  return s;
}

async function finish(s: Setup): Promise<string[]> {
  const problems: string[] = [];
  if (s.kind === "stopped") {
    // Continued by its owner, it carries on unharmed.
    process.kill(s.t.pid, "SIGCONT");
    await waitUntil(() => allThreads(s.t, (x) => !isStopped(x)), "the stopped target to continue");
    const s0 = await s.t.stats();
    const s1 = await s.t.waitForStats((x) => x.main.progress > s0.main.progress && x.threads.every((th, i) => th.progress > s0.threads[i].progress), "progress after SIGCONT");
    const eintr = s1.threads.reduce((a, th) => a + th.eintr, 0);
    if (eintr) problems.push(`stopped target: ${eintr} EINTR in its worker nanosleeps`);
  }
  if (s.stream) {
    const sent = await s.stream.stop();
    let counted = 0;
    try {
      const st = await s.t.waitForStats((x) => (x.signals[String(SIGNAL)] ?? 0) >= sent, `${sent} signals counted`, 10_000);
      counted = st.signals[String(SIGNAL)] ?? 0;
    } catch {
      counted = (await s.t.stats()).signals[String(SIGNAL)] ?? 0;
    }
    console.log(`signals target: sent ${sent} signals during its trials, counted ${counted}`);
    if (counted !== sent) problems.push(`signals target: sent ${sent}, counted ${counted}`);
  }
  await api.unlock({ target: { pid: s.t.pid }, mappings: { all: true } });
  await s.t.stop();
  return problems;
}

const endProblems: string[] = [];

describe.each(Object.keys(KINDS) as Kind[])("kill -9 during lock and unlock: %s target", (kind) => {
  test(`every fault point, random instants, and a kill during recovery`, async () => {
    const s = await setUp(kind);
    const methods: Recovery[] = ["cli", "library", "next-op"];
    let i = 0;
    const how = (): Recovery => methods[i++ % methods.length];
    const mine: Trial[] = [];
    // A trial that throws (the target stuck, say) is recorded with where it was, and ends this kind.
    const trial = async (op: Op, point: string, sel: SelectionSpec, kill: Parameters<typeof runTrial>[5]): Promise<void> => {
      const recovery = how();
      let thrown: unknown;
      try {
        mine.push(await runTrial(s, op, point, sel, recovery, kill));
      } catch (err) {
        const states = JSON.stringify([...s.t.threadStates()]);
        mine.push({ kind, op, point, killed: false, journal: journalStage(s.t.pid), recovery, failures: [`${(err as Error).message} (threads ${states}, journal ${journalEntries(s.t.pid).join(",")})`] });
        thrown = err;
      } finally {
        trials.push(mine[mine.length - 1]);
      }
      if (thrown !== undefined) throw thrown;
      // A dead target ends its kind: the trials after it would only repeat that.
      if (!s.t.isAlive()) throw new Error(`${kind} target died at ${op} ${point}: ${mine[mine.length - 1].failures.join("; ")}`);
    };
    try {
      for (const op of ["lock", "unlock"] as const) {
        const calls = selected(kernelMappings(s.t.pid), CODE).length;
        for (const point of POINTS) {
          // Per-call points: kill at a different call each time.
          const nth = point.startsWith("syscall-") && calls > 1 ? 1 + (i % calls) : 1;
          await trial(op, point, CODE, { at: `${point}:${nth}` });
        }
        for (let r = 0; r < RANDOM_PER_KIND_OP; r++) {
          // Anywhere from the journal's first write to a little past the calibrated end.
          const w = s.window[op];
          await trial(op, "random", ANON, { afterJournalMs: Math.round(random() * (w.to - w.from) * 1.2) });
        }
        // First killed with our registers in the thread, then killed again inside the
        // recovery that the next run does before its own work.
        await trial(op, "recovery:syscall-exit", CODE, { at: "syscall-exit:1", again: "syscall-exit:1" });
      }
    } finally {
      for (const f of mine.filter((x) => x.failures.length > 0)) {
        console.log(`FAILED ${f.kind} ${f.op} at ${f.point} (journal ${f.journal}, recovery ${f.recovery}): ${f.failures.join("; ")}`);
      }
    }
    endProblems.push(...(await finish(s)));
    const failed = mine.filter((x) => x.failures.length > 0);
    expect(failed.map((f) => `${f.op} ${f.point}: ${f.failures.join("; ")}`)).toEqual([]);
  });
});

afterAll(() => {
  if (trials.length === 0) return;
  const survivors = trials.filter((x) => x.failures.length === 0).length;
  const lines = [`fault injection (seed ${seed}): survivors ${survivors}/${trials.length} trials, ${trials.filter((x) => x.killed).length} of them killed`];
  const points = [...POINTS, "random", "recovery:syscall-exit"];
  lines.push(`${"point".padEnd(22)} ${"trials".padStart(6)} ${"killed".padStart(6)} ${"ok".padStart(4)} ${"old".padStart(4)} ${"new".padStart(4)}  journal at the kill`);
  for (const p of points) {
    const of = trials.filter((x) => x.point === p);
    const stages = new Map<string, number>();
    for (const x of of.filter((y) => y.killed)) stages.set(x.journal, (stages.get(x.journal) ?? 0) + 1);
    lines.push(
      `${p.padEnd(22)} ${String(of.length).padStart(6)} ${String(of.filter((x) => x.killed).length).padStart(6)} ${String(of.filter((x) => !x.failures.length).length).padStart(4)} ` +
        `${String(of.filter((x) => x.outcome === "old").length).padStart(4)} ${String(of.filter((x) => x.outcome === "new").length).padStart(4)}  ` +
        [...stages].map(([k, v]) => `${k} ${v}`).join(", "),
    );
  }
  const kinds = Object.keys(KINDS) as Kind[];
  lines.push(`by target: ${kinds.map((k) => `${k} ${trials.filter((x) => x.kind === k && !x.failures.length).length}/${trials.filter((x) => x.kind === k).length}`).join(", ")}`);
  if (endProblems.length) lines.push(`after the trials: ${endProblems.join("; ")}`);
  console.log(lines.join("\n"));
});

test("the run covered every point at least 10 times and 200 trials in all", () => {
  // Runs after the describe blocks (jest keeps declaration order in a file).
  expect(trials.length).toBeGreaterThanOrEqual(200);
  for (const p of POINTS) expect([p, trials.filter((x) => x.point === p && x.killed).length >= 10]).toEqual([p, true]);
  expect(endProblems).toEqual([]);
});
