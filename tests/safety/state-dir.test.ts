// The state dir trusts nothing (issue 14, item 2). A journal decides which syscalls run in a
// target and which registers it gets; a limit record decides a process's RLIMIT_MEMLOCK; file
// names go into paths. Seen before: a forged journal made `lock` run exit_group(77) in the
// target, a forged limit record set an untouched process's limit to 0, and a start time of
// "x/../../../tmp/sp/dummy" made `recover` delete a file outside the state dir.
import * as fs from "fs";
import * as path from "path";
import * as api from "../../src/api";
import { recoverInterrupted } from "../../src/journal";
import { native } from "../../src/native";
import { readStat } from "../../src/proc/stat";
import { readMemlockLimit } from "../../src/proc/limits";
import { procState } from "../support/safety";
import { waitUntil, workDir } from "../support/target";
import { startWaiters, stopAllWaiters, Waiters } from "../support/waiters";
import { isTraced } from "../support/smaps";

jest.setTimeout(120_000);

const base = path.join(workDir(), `state-trust-${process.pid}`);
let stateDir: string;
let n = 0;
beforeEach(() => {
  stateDir = path.join(base, String(++n));
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  process.env.LOCKMEM_STATE_DIR = stateDir;
});
afterAll(() => {
  stopAllWaiters();
  fs.rmSync(base, { recursive: true, force: true });
});

async function untouched(w: Waiters): Promise<void> {
  expect(procState(w.pid)).not.toBe("T");
  expect(isTraced(w.pid)).toBe(false);
  const s = await api.status({ target: { pid: w.pid }, mappings: { permissions: ["r-x", "rwx"] } });
  expect(s.processes[0].selection?.lockedMappings).toBe(0);
}

function writeJournal(name: string, body: unknown): string {
  const dir = path.join(stateDir, "journal");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, name);
  fs.writeFileSync(file, typeof body === "string" ? body : JSON.stringify(body), { mode: 0o600 });
  return file;
}

test.each([
  ["writable by everyone", 0o777],
  ["writable by its group", 0o770],
])("a state dir %s is refused before any process is touched", async (_what, mode) => {
  const w = await startWaiters(["epoll_wait"]);
  try {
    fs.chmodSync(stateDir, mode);
    await expect(api.lock({ target: { pid: w.pid } })).rejects.toMatchObject({ code: "EPERM", stage: "state-dir", message: expect.stringMatching(/not safe to trust/) });
    await expect(recoverInterrupted(w.pid)).rejects.toMatchObject({ code: "EPERM", stage: "state-dir" });
    fs.chmodSync(stateDir, 0o700);
    await untouched(w);
  } finally {
    w.stop();
  }
});

test("a forged journal with a syscall lockmem never makes (exit_group) is set aside, never run", async () => {
  const w = await startWaiters(["epoll_wait"]);
  try {
    const stat = await readStat(w.pid);
    process.kill(w.pid, "SIGSTOP"); // a "held" target, as a dead run would leave it
    await waitUntil(() => procState(w.pid) === "T", "stopped");
    const name = `${w.pid}-${stat.startTime}-${w.pid}.json`;
    writeJournal(name, { v: 1, pid: w.pid, tid: w.pid, startTime: stat.startTime, owner: 1, at: "x", ops: [{ nr: 231, args: ["77"] }] });
    const results = await recoverInterrupted(w.pid);
    expect(results).toEqual([expect.objectContaining({ outcome: "refused", detail: expect.stringMatching(/syscall 231, which lockmem never makes/) })]);
    expect(fs.existsSync(path.join(stateDir, "journal", `${name}.invalid`))).toBe(true);
    process.kill(w.pid, "SIGCONT");
    await waitUntil(() => procState(w.pid) !== "T", "continued");
    await untouched(w);
    // The next lock works normally and the process lives.
    const r = await api.lock({ target: { pid: w.pid } });
    expect(r.processes[0].error).toBeUndefined();
    expect(procState(w.pid)).not.toBe("Z");
  } finally {
    w.stop();
  }
});

test("a journal that holds JSON null: status still shows the dead run (without an owner), recovery refuses it", async () => {
  const w = await startWaiters(["epoll_wait"]);
  try {
    const stat = await readStat(w.pid);
    writeJournal(`${w.pid}-${stat.startTime}-${w.pid}.json`, "null");
    const s = await api.status({ target: { pid: w.pid } });
    expect(s.processes[0].heldByDeadRun).toEqual([{ tid: w.pid }]);
    const results = await recoverInterrupted(w.pid);
    expect(results).toEqual([expect.objectContaining({ outcome: "refused" })]);
    await untouched(w);
  } finally {
    w.stop();
  }
});

test.each([
  ["an mlock2 with flags lockmem never uses", (pid: number, st: string) => ({ v: 1, pid, tid: pid, startTime: st, owner: 1, at: "x", ops: [{ nr: native().syscalls.mlock2, args: ["4096", "4096", "2"] }] }), /mlock2 with arguments/],
  ["contents naming another process than its file name", (pid: number, st: string) => ({ v: 1, pid: pid + 1, tid: pid, startTime: st, owner: 1, at: "x", ops: [] }), /another process than its file name/],
  ["a start time that walks out of the state dir", (pid: number) => ({ v: 1, pid, tid: pid, startTime: "x/../../../../sentinel", owner: 1, at: "x", ops: [] }), /start time is not a decimal/],
  ["no JSON at all", () => "\u0000garbage", /not a JSON object/],
])("a journal with %s is refused", async (_what, body, why) => {
  const w = await startWaiters(["epoll_wait"]);
  const sentinel = path.join(base, "sentinel");
  fs.writeFileSync(sentinel, "keep");
  try {
    const stat = await readStat(w.pid);
    writeJournal(`${w.pid}-${stat.startTime}-${w.pid}.json`, body(w.pid, stat.startTime));
    const results = await recoverInterrupted(w.pid);
    expect(results).toEqual([expect.objectContaining({ outcome: "refused", detail: expect.stringMatching(why) })]);
    expect(fs.readFileSync(sentinel, "utf8")).toBe("keep");
    await untouched(w);
  } finally {
    w.stop();
  }
});

test("a torn or foreign .regs beside a valid header is set aside; the process is left alone", async () => {
  const w = await startWaiters(["epoll_wait"]);
  try {
    const stat = await readStat(w.pid);
    const base = `${w.pid}-${stat.startTime}-${w.pid}`;
    writeJournal(`${base}.json`, { v: 1, pid: w.pid, tid: w.pid, startTime: stat.startTime, owner: 1, at: "x", ops: [] });
    writeJournal(`${base}.regs`, `v=2\npid=${w.pid}\ntid=${w.pid + 7}\nwasStopped=0\nregs=00\n`);
    const results = await recoverInterrupted(w.pid);
    expect(results).toEqual([expect.objectContaining({ outcome: "refused" })]);
    await untouched(w);
  } finally {
    w.stop();
  }
});

/** Writes a limit record for w's process, as a forger would; returns its path. */
async function forgeLimitRecord(w: Waiters, original: { soft: string; hard: string }, raisedTo: { soft: string; hard: string }): Promise<string> {
  const stat = await readStat(w.pid);
  const dir = path.join(stateDir, "limits");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${w.pid}-${stat.startTime}.json`);
  fs.writeFileSync(file, JSON.stringify({ pid: w.pid, startTime: stat.startTime, original, raisedTo, at: "x" }));
  return file;
}

test("a limit record in a state dir others can write is never read: unlock refuses, RLIMIT_MEMLOCK unchanged", async () => {
  const w = await startWaiters(["epoll_wait"]);
  try {
    const before = await readMemlockLimit(w.pid);
    const file = await forgeLimitRecord(w, { soft: "0", hard: "0" }, { soft: before.soft.toString(), hard: before.hard.toString() });
    fs.chmodSync(path.dirname(file), 0o777);
    await expect(api.unlock({ target: { pid: w.pid } })).rejects.toMatchObject({ code: "EPERM", stage: "state-dir" });
    expect(await readMemlockLimit(w.pid)).toEqual(before);
  } finally {
    w.stop();
  }
});

test("a limit record lockmem could not have written (it lowers the limit) is set aside with a warning, the limit unchanged", async () => {
  const w = await startWaiters(["epoll_wait"]);
  try {
    const before = await readMemlockLimit(w.pid);
    const file = await forgeLimitRecord(w, { soft: (before.soft + 1n).toString(), hard: (before.hard + 1n).toString() }, { soft: "0", hard: "0" });
    const u = await api.unlock({ target: { pid: w.pid } });
    expect(await readMemlockLimit(w.pid)).toEqual(before);
    expect(u.processes[0].warnings.join("\n")).toMatch(/not one lockmem wrote.*RLIMIT_MEMLOCK left as it is/);
    expect(fs.existsSync(`${file}.invalid`)).toBe(true);
  } finally {
    w.stop();
  }
});

test("lock files of processes that are gone are pruned by a full recover; live ones stay", async () => {
  const w = await startWaiters(["epoll_wait"]);
  try {
    const { execFileSync } = await import("child_process");
    const gone = Number(execFileSync("sh", ["-c", "true & echo $!"]).toString().trim());
    await waitUntil(() => !fs.existsSync(`/proc/${gone}`), "the short-lived process to be gone");
    await api.lock({ target: { pid: w.pid } }); // leaves a lock file for a live process
    const locks = path.join(stateDir, "locks");
    fs.writeFileSync(path.join(locks, `${gone}.lock`), "{}", { mode: 0o600 });
    await recoverInterrupted();
    expect(fs.existsSync(path.join(locks, `${gone}.lock`))).toBe(false);
    expect(fs.existsSync(path.join(locks, `${w.pid}.lock`))).toBe(true);
    // And a lock taken afterwards still serialises.
    const r = await api.unlock({ target: { pid: w.pid } });
    expect(r.processes[0].error).toBeUndefined();
  } finally {
    w.stop();
  }
});
