// Nobody needs to run `recover` (issue 13): lockmem killed mid-session (SIGKILL, as the OOM
// killer would) at every fault point, during lock and unlock. Its guardian must have the
// target running again, untraced, with no journal left, within a bound, without anyone
// acting; the time from the kill to the target running is printed per point. Killing
// lockmem's whole process group (a script's timeout, a terminal hang-up) must not take the
// guardian with it. Without a guardian, `status` and `doctor` say the target is held by a
// dead run and `recover` finishes it.
import { ChildProcess, execFile, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as api from "../../src/api";
import { FAULT_POINTS, journalsIn, LOCKMEM_BIN, procState, safetySuite } from "../support/safety";
import { stressLabel, stressMode } from "../support/stress";
import { startTarget, stopAllTargets, waitUntil } from "../support/target";
import { startWaiters, Waiters } from "../support/waiters";
import { isTraced } from "../support/smaps";

jest.setTimeout(15 * 60_000);

const bin = LOCKMEM_BIN;
const stateDir = safetySuite("guardian");
const POINTS = FAULT_POINTS;
const KINDS = ["epoll_wait", "nanosleep", "read", "io_uring_enter"];
// The goal is ~100 ms; the bound leaves room for a loaded CI machine.
const BOUND_MS = stressMode() === "quiet" ? 1_000 : 5_000;

afterAll(stopAllTargets);

const journals = (): string[] => journalsIn(stateDir);

const running = (w: Waiters) => (): boolean => procState(w.pid) !== "T" && procState(w.pid) !== "t" && !isTraced(w.pid) && journals().length === 0;

/** Runs the CLI in its own process group; resolves when it has exited, with the exit time. */
function cliRun(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; signal: string | null; exitedAt: bigint }> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, [bin, ...args], { env: { ...process.env, LOCKMEM_STATE_DIR: stateDir, ...env }, stdio: "ignore", detached: true });
    child.on("error", reject);
    child.on("exit", (code, signal) => resolve({ code, signal, exitedAt: process.hrtime.bigint() }));
  });
}

async function msUntilRunning(w: Waiters, since: bigint): Promise<number> {
  await waitUntil(running(w), `process ${w.pid} running again without anyone acting`, { timeoutMs: 30_000, intervalMs: 1 });
  return Number(process.hrtime.bigint() - since) / 1e6;
}

test(`killed at every fault point: the target runs again within ${BOUND_MS} ms, no recover run (${stressLabel()})`, async () => {
  const w = await startWaiters(KINDS);
  const times: Record<string, number> = {};
  try {
    for (const op of ["lock", "unlock"]) {
      for (const point of POINTS) {
        // Each trial starts from the state the operation starts from.
        if (op === "unlock") await api.lock({ target: { pid: w.pid } });
        const r = await cliRun([op, "--pid", String(w.pid)], { LOCKMEM_TEST_KILL_AT: point });
        expect({ point, signal: r.signal }).toEqual({ point, signal: "SIGKILL" });
        times[`${op}@${point}`] = Math.round(await msUntilRunning(w, r.exitedAt));
        if (op === "lock") await api.unlock({ target: { pid: w.pid } });
      }
    }
    console.log(`guardian (${stressLabel()}): ms from the kill to the target running: ${JSON.stringify(times)}`);
    for (const [trial, ms] of Object.entries(times)) expect({ trial, within: ms <= BOUND_MS }).toEqual({ trial, within: true });
    expect(Object.values(w.eintrs()).reduce((a, b) => a + b, 0)).toBe(0);
  } finally {
    w.stop();
  }
});

test(`killed at random instants inside long sessions (256 MiB): the guardian always brings the target back (${stressLabel()})`, async () => {
  const t = await startTarget({ mode: "sleep", sleepMs: 20, threads: 2, threadMode: "epoll", threadSleepMs: 10, anonMb: 256 });
  const times: number[] = [];
  const journalDir = path.join(stateDir, "journal");
  fs.mkdirSync(journalDir, { recursive: true });
  for (let trial = 0; trial < 12; trial++) {
    const op = trial % 2 === 0 ? "lock" : "unlock";
    // SIGKILL from here, a random 0-120 ms after the journal first changes: inside the session.
    const delay = (trial * 37) % 120;
    let timer: NodeJS.Timeout | undefined;
    const r = await new Promise<{ exitedAt: bigint }>((resolve, reject) => {
      const child = spawn(process.execPath, [bin, op, "--pid", String(t.pid), "--kind", "anon"], { env: { ...process.env, LOCKMEM_STATE_DIR: stateDir }, stdio: "ignore" });
      const watcher = fs.watch(journalDir, () => {
        watcher.close();
        timer = setTimeout(() => child.kill("SIGKILL"), delay);
      });
      child.on("error", reject);
      child.on("exit", () => {
        watcher.close();
        if (timer) clearTimeout(timer);
        resolve({ exitedAt: process.hrtime.bigint() });
      });
    });
    await waitUntil(() => procState(t.pid) !== "T" && procState(t.pid) !== "t" && !isTraced(t.pid) && journals().length === 0, `target ${t.pid} running after a kill in trial ${trial}`, { timeoutMs: 30_000, intervalMs: 1 }).catch((err: Error) => {
      // Which of the three it was (seen once under CPU stress, trial 10, with no guardian log line).
      throw new Error(`${err.message}: state ${procState(t.pid)}, traced ${isTraced(t.pid)}, journals ${JSON.stringify(journals())}`);
    });
    times.push(Math.round(Number(process.hrtime.bigint() - r.exitedAt) / 1e6));
  }
  const s = await t.stats();
  console.log(`guardian, random kills (${stressLabel()}): ms to running ${JSON.stringify(times)}; sleeps eintr ${s.sleep.eintr} violations ${s.sleep.violations}`);
  expect(s.sleep.eintr).toBe(0);
  expect(s.sleep.violations).toBe(0);
  expect(Math.max(...times)).toBeLessThanOrEqual(BOUND_MS);
});

test(`a kill of lockmem's whole process group does not take its guardian (${stressLabel()})`, async () => {
  const w = await startWaiters(KINDS);
  try {
    // At a point where the target is held, the run SIGKILLs its whole process group (it
    // was started as a group leader), as a script's `timeout -s KILL` would.
    const r = await cliRun(["lock", "--pid", String(w.pid)], { LOCKMEM_TEST_KILL_AT: "group:before-restore" });
    expect(r.signal).toBe("SIGKILL");
    const ms = await msUntilRunning(w, r.exitedAt);
    expect(ms).toBeLessThanOrEqual(BOUND_MS);
  } finally {
    w.stop();
  }
});

test(`without a guardian, status and doctor show the target held by a dead run, and recover finishes it (${stressLabel()})`, async () => {
  const w = await startWaiters(KINDS);
  try {
    const r = await cliRun(["lock", "--pid", String(w.pid)], { LOCKMEM_TEST_KILL_AT: "before-restore", LOCKMEM_TEST_NO_GUARDIAN: "1" });
    expect(r.signal).toBe("SIGKILL");
    await waitUntil(() => procState(w.pid) === "T" && !isTraced(w.pid), "the target left stopped by the dead run");
    const status = await api.status({ target: { pid: w.pid } });
    expect(status.processes[0].heldByDeadRun?.length).toBe(1);
    const text = await new Promise<string>((resolve) =>
      execFile(process.execPath, [bin, "status", "--pid", String(w.pid)], { env: { ...process.env, LOCKMEM_STATE_DIR: stateDir } }, (_e, out) => resolve(out)),
    );
    expect(text).toMatch(/held by a lockmem run that died mid-session/);
    const doctor = await api.doctor({ target: { pid: w.pid } });
    expect(doctor.processes[0].checks.find((c) => c.check === "lockmem session")).toMatchObject({ ok: false });
    const rec = await new Promise<string>((resolve) =>
      execFile(process.execPath, [bin, "recover", "--pid", String(w.pid)], { env: { ...process.env, LOCKMEM_STATE_DIR: stateDir } }, (_e, out) => resolve(out)),
    );
    expect(rec).toMatch(/restored/);
    await waitUntil(running(w), "the target running after recover");
    expect((await api.status({ target: { pid: w.pid } })).processes[0].heldByDeadRun).toBeUndefined();
  } finally {
    w.stop();
  }
});
