// Issue 15 item 5: SIGTERM/SIGINT/SIGHUP and a closed output. lockmem ends at once while it
// holds no target; during a chunked lock it stops at the next session boundary, undoes what
// it did (or keeps it with --keep-on-interrupt), prints exactly what is locked, and exits
// 128+N. Checked against the kernel (VmLck, smaps), the journal folder and the target's state.
import { ChildProcessWithoutNullStreams, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../support/repo";
import { startTarget, stopAllTargets, Target, waitUntil, workDir } from "../support/target";
import { isTraced, vmLckKb } from "../support/smaps";

jest.setTimeout(180_000);
afterAll(stopAllTargets);

const root = repoRoot();
const bin = path.join(root, "bin", "lockmem");
const stateDir = path.join(workDir(), `state-interrupt-${process.pid}`);
const env = { ...process.env, LOCKMEM_STATE_DIR: stateDir };

interface Cli {
  child: ChildProcessWithoutNullStreams;
  out: { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

function startCli(args: string[]): Cli {
  const child = spawn(process.execPath, [bin, ...args], { env });
  const out = { stdout: "", stderr: "" };
  child.stdout.on("data", (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  return { child, out, exited };
}

const vmLck = (pid: number): number => vmLckKb(pid) * 1024;

function journalFiles(): string[] {
  const dir = path.join(stateDir, "journal");
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}

/** A target whose anon lock with --max-pause-ms 0.5 takes hundreds of sessions. */
let big: Target;
beforeAll(async () => {
  big = await startTarget({ mode: "sleep", sleepMs: 20, anonMb: 1024, readyTimeoutMs: 120_000 });
});

async function lockUntilStarted(extra: string[]): Promise<Cli> {
  expect(vmLck(big.pid)).toBe(0);
  const cli = startCli(["lock", "--pid", String(big.pid), "--kind", "anon", "--max-pause-ms", "0.5", ...extra]);
  await waitUntil(() => vmLck(big.pid) > 0, "the chunked lock to begin", { timeoutMs: 30_000, intervalMs: 2 });
  return cli;
}

function expectLeftIntact(t: Target): void {
  expect(t.isAlive()).toBe(true);
  expect(isTraced(t.pid)).toBe(false);
  expect([...t.threadStates().values()].every((s) => s !== "t" && s !== "T")).toBe(true);
  expect(journalFiles()).toEqual([]);
}

test("SIGTERM during a chunked lock: stops at the next session, undoes it, reports, exits 143", async () => {
  const cli = await lockUntilStarted([]);
  const sent = Date.now();
  cli.child.kill("SIGTERM");
  const { code, at } = await cli.exited;
  console.log(`SIGTERM to exit: ${at - sent} ms; stdout: ${cli.out.stdout.trim()}; stderr: ${cli.out.stderr.trim()}`);
  expect(code).toBe(143);
  expect(at - sent).toBeLessThan(5_000);
  expect(cli.out.stdout).toMatch(new RegExp(`^${big.pid}: lock stopped by SIGTERM after \\d+ session\\(s\\), undone; now locked: 0 of \\d+ selected mapping\\(s\\), 0 B; VmLck 0 B$`, "m"));
  expect(cli.out.stderr).toMatch(/SIGTERM received/);
  expect(cli.out.stderr).toMatch(new RegExp(`lockmem: ${big.pid} \\(\\S+\\): stopped: stopped by SIGTERM after \\d+ session\\(s\\) .*undone, nothing stays locked from this attempt`));
  expect(vmLck(big.pid)).toBe(0);
  expectLeftIntact(big);
});

test("SIGINT with --keep-on-interrupt: keeps what is locked, and the JSON report says exactly what the kernel holds (exit 130)", async () => {
  const cli = await lockUntilStarted(["--keep-on-interrupt", "--json"]);
  cli.child.kill("SIGINT");
  const { code } = await cli.exited;
  expect(code).toBe(130);
  const report = JSON.parse(cli.out.stdout);
  const p = report.processes[0];
  expect(p.outcome).toBe("interrupted");
  expect(p.error.code).toBe("EINTR");
  expect(p.action.interrupted).toEqual({ reason: "SIGINT", undone: false, sessionsDone: expect.any(Number) });
  expect(p.action.interrupted.sessionsDone).toBeGreaterThan(0);
  expect(p.vmLck).toBeGreaterThan(0);
  expect(p.vmLck).toBe(vmLck(big.pid));
  expect(p.selection.inSync).toBe(false);
  expectLeftIntact(big);
  const unlock = startCli(["unlock", "--pid", String(big.pid), "--kind", "anon"]);
  expect((await unlock.exited).code).toBe(0);
  expect(vmLck(big.pid)).toBe(0);
});

test("an orphaned run whose stdout and stderr are closed: a hangup stops it, it undoes and exits instead of crashing half way", async () => {
  const cli = await lockUntilStarted([]);
  // The reader of both pipes goes away, as when the terminal or the parent of a pipeline dies.
  cli.child.stdout.destroy();
  cli.child.stderr.destroy();
  cli.child.kill("SIGHUP");
  const { code } = await cli.exited;
  expect(code).toBe(129);
  expect(vmLck(big.pid)).toBe(0);
  expectLeftIntact(big);
});

test("a signal while no target is held ends lockmem at once: an idle agent, a lock not started yet", async () => {
  const agent = startCli(["agent", "--serve"]);
  // The agent is ready once it answers.
  agent.child.stdin.write(JSON.stringify({ v: 1, op: "version" }) + "\n");
  await waitUntil(() => agent.out.stdout.includes("\n"), "the agent's first reply", { timeoutMs: 20_000 });
  const sent = Date.now();
  agent.child.kill("SIGTERM");
  const { code, at } = await agent.exited;
  expect(code).toBe(143);
  expect(at - sent).toBeLessThan(2_000);
});
