// The agent request handler with a scripted core: dispatch, error mapping and the
// per-target serialisation (real flock files, real processes).
import { spawn, ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LockError } from "../../src/errors";
import { AgentCore, handleRequest } from "../../src/agent/server";
import { lockTargets } from "../../src/agent/target-lock";
import { resolveTarget } from "../../src/target";

interface Interval {
  start: number;
  end: number;
}

function scriptedCore(opDurationMs: number, intervals: Interval[]): AgentCore {
  const slow = async (): Promise<unknown> => {
    const start = Date.now();
    await new Promise((r) => setTimeout(r, opDurationMs));
    intervals.push({ start, end: Date.now() });
    return { done: true };
  };
  return {
    status: async () => ({ status: true }),
    plan: async (r) => ({ plan: r }),
    lock: slow,
    unlock: slow,
    doctor: async () => ({ doctor: true }),
    resolveTarget: (spec) => resolveTarget(spec),
  };
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("agent request handling", () => {
  let target: ChildProcess;
  let pid: number;
  let lockDir: string;

  beforeAll(() => {
    target = spawn("sleep", ["600"], { stdio: "ignore" });
    pid = target.pid!;
    lockDir = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-locks-"));
  });
  afterAll(() => {
    target.kill("SIGKILL");
    fs.rmSync(lockDir, { recursive: true, force: true });
  });

  test("version answers the protocol version without loading the core", async () => {
    const { reply, exitCode } = await handleRequest(JSON.stringify({ v: 1, op: "version", id: "x1" }));
    expect(exitCode).toBe(0);
    expect(reply).toMatchObject({ v: 1, ok: true, id: "x1", result: { protocol: 1, uid: 0 } });
  });

  test("plan is always a dry run", async () => {
    const core = scriptedCore(0, []);
    const { reply } = await handleRequest(JSON.stringify({ v: 1, op: "plan", args: { target: { pid } } }), { core, lockDir });
    expect(reply).toMatchObject({ ok: true, result: { plan: { target: { pid }, dryRun: true } } });
  });

  test("errors from the core keep their code, hint and fields; exit 1", async () => {
    const core: AgentCore = {
      ...scriptedCore(0, []),
      status: async () => {
        throw new LockError({ code: "EPERM", message: "ptrace denied", hint: "run as root", pid: 7, stage: "attach" });
      },
    };
    const { reply, exitCode } = await handleRequest(JSON.stringify({ v: 1, op: "status", args: { target: { pid } } }), { core });
    expect(exitCode).toBe(1);
    expect(reply).toEqual({ v: 1, ok: false, error: { code: "EPERM", message: "ptrace denied", hint: "run as root", pid: 7, stage: "attach" } });
  });

  test("an unexpected exception becomes EINTERNAL, not a crash", async () => {
    const core: AgentCore = { ...scriptedCore(0, []), doctor: async () => Promise.reject(new TypeError("boom")) };
    const { reply, exitCode } = await handleRequest(JSON.stringify({ v: 1, op: "doctor", args: { target: { pid } } }), { core });
    expect(exitCode).toBe(1);
    expect(reply).toMatchObject({ ok: false, error: { code: "EINTERNAL", message: expect.stringContaining("boom") } });
  });

  test("two concurrent changes of one target run one after the other", async () => {
    const intervals: Interval[] = [];
    const core = scriptedCore(300, intervals);
    const req = (op: string): string => JSON.stringify({ v: 1, op, args: { target: { pid } } });
    const results = await Promise.all([handleRequest(req("lock"), { core, lockDir }), handleRequest(req("unlock"), { core, lockDir })]);
    expect(results.map((r) => r.exitCode)).toEqual([0, 0]);
    intervals.sort((a, b) => a.start - b.start);
    expect(intervals).toHaveLength(2);
    expect(intervals[1].start).toBeGreaterThanOrEqual(intervals[0].end);
    expect(fs.statSync(lockDir).mode & 0o777).toBe(0o700);
  });

  test("the second agent gives up after waitMs with EBUSY naming the holder", async () => {
    const held = await lockTargets([pid], { op: "lock", waitMs: 0, dir: lockDir });
    try {
      const started = Date.now();
      const { reply, exitCode } = await handleRequest(
        JSON.stringify({ v: 1, op: "lock", waitMs: 300, args: { target: { pid } } }),
        { core: scriptedCore(0, []), lockDir },
      );
      const took = Date.now() - started;
      expect(exitCode).toBe(1);
      expect(reply).toMatchObject({ ok: false, error: { code: "EBUSY", pid } });
      if (!reply.ok) expect(reply.error.message).toContain(`lockmem process ${process.pid} (lock`);
      expect(took).toBeGreaterThanOrEqual(250);
      expect(took).toBeLessThan(3000);
    } finally {
      held.release();
    }
  });

  test("a lock whose holder is killed is released at once", async () => {
    // One process from start to end (exec): it opens the file, flocks it, becomes sleep.
    const file = path.join(lockDir, `${pid}.lock`);
    const holder = spawn("sh", ["-c", `exec 9>>'${file}'; flock -x 9; exec sleep 600`], { stdio: "ignore" });
    try {
      // wait until the holder has it: a non-blocking attempt fails
      await waitFor(() => fs.existsSync(`/proc/${holder.pid}`), 2000);
      let busy = false;
      for (let i = 0; i < 200 && !busy; i++) {
        try {
          (await lockTargets([pid], { op: "probe", waitMs: 0, dir: lockDir })).release();
          await new Promise((r) => setTimeout(r, 10));
        } catch (e) {
          busy = e instanceof LockError && e.code === "EBUSY";
        }
      }
      expect(busy).toBe(true);
      const pending = handleRequest(JSON.stringify({ v: 1, op: "lock", waitMs: 20_000, args: { target: { pid } } }), {
        core: scriptedCore(0, []),
        lockDir,
      });
      await new Promise((r) => setTimeout(r, 200));
      holder.kill("SIGKILL");
      const started = Date.now();
      const { exitCode } = await pending;
      expect(exitCode).toBe(0);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      holder.kill("SIGKILL");
    }
  });
});
