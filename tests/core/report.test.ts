// Issue 15: what lockmem says must be what happened. Each test runs the CLI as a user
// would and checks its text, its JSON and its exit code against the kernel's own view
// (/proc/PID/status VmLck, smaps VmFlags lo).
import { execFile, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../support/repo";
import { startTarget, stopAllTargets, Target, waitUntil, workDir } from "../support/target";
import { isLockedVma, kernelMappings, vmLckKb } from "../support/smaps";

jest.setTimeout(120_000);
afterEach(stopAllTargets);

const root = repoRoot();
const bin = path.join(root, "bin", "lockmem");
const env = { ...process.env, LOCKMEM_STATE_DIR: path.join(workDir(), `state-report-${process.pid}`) };

beforeAll(() => {
  if (!fs.existsSync(path.join(root, "dist", "src", "cli", "main.js"))) {
    throw new Error("dist/ is missing: run `npm run build:ts` (scripts/test.sh does)");
  }
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** VmLck as the kernel shows it, in bytes. */
const vmLck = (pid: number): number => vmLckKb(pid) * 1024;

// `(ulimit -l 64; exec setpriv --reuid=nobody ... sleep 999)` of the issue: another user, no
// CAP_IPC_LOCK, 64 KiB RLIMIT_MEMLOCK: the default r-x selection does not fit.
const unprivileged = { uid: 65534, memlockKb: 64 };

test("--all-matches, text mode: every failure on stderr naming the pid and the reason; exit 1 when none done, 3 when some", async () => {
  const tag = `report-fail-${process.pid}`;
  const a = await startTarget({ mode: "idle", tag, dropPrivs: unprivileged });
  const b = await startTarget({ mode: "idle", tag, dropPrivs: unprivileged });

  const none = await run(["lock", "--cmdline", tag, "--all-matches"]);
  expect(none.code).toBe(1);
  expect(none.stdout).toBe("");
  for (const t of [a, b]) expect(none.stderr).toMatch(new RegExp(`lockmem: ${t.pid} \\(\\S+\\): failed: .*RLIMIT_MEMLOCK`));
  expect(vmLck(a.pid) + vmLck(b.pid)).toBe(0);

  const c = await startTarget({ mode: "idle", tag });
  const some = await run(["lock", "--cmdline", tag, "--all-matches"]);
  expect(some.code).toBe(3);
  expect(some.stdout).toMatch(new RegExp(`^${c.pid}: locked \\d+ mapping`, "m"));
  expect(some.stdout).not.toMatch(new RegExp(`^(${a.pid}|${b.pid}):`, "m"));
  for (const t of [a, b]) expect(some.stderr).toMatch(new RegExp(`lockmem: ${t.pid} \\(\\S+\\): failed: .*RLIMIT_MEMLOCK`));
  expect(some.stderr).not.toMatch(new RegExp(`lockmem: ${c.pid}`));

  const json = await run(["lock", "--cmdline", tag, "--all-matches", "--json"]);
  expect(json.code).toBe(3);
  const report = JSON.parse(json.stdout);
  expect(report.summary).toEqual({ done: 1, gone: 0, failed: 2, interrupted: 0, skipped: 0 });
  const byPid = new Map<number, { outcome: string; vmLck: number; error?: { code: string } }>(report.processes.map((p: { pid: number }) => [p.pid, p]));
  expect(byPid.get(c.pid)?.outcome).toBe("done");
  expect(byPid.get(a.pid)?.outcome).toBe("failed");
  expect(byPid.get(a.pid)?.error?.code).toBe("ENOMEM");
  // The kernel agrees: the one reported done holds what the report says, the others nothing.
  expect(byPid.get(c.pid)?.vmLck).toBe(vmLck(c.pid));
  expect(vmLck(c.pid)).toBeGreaterThan(0);
  expect(vmLck(a.pid) + vmLck(b.pid)).toBe(0);
});

test("--all-matches: a process that exits during the run is gone, not a failure of the others (exit 0)", async () => {
  const tag = `report-gone-${process.pid}`;
  // Targets are handled in pid order: the first one's chunked lock gives the time to end the second.
  const first = await startTarget({ mode: "idle", tag, anonMb: 256, readyTimeoutMs: 60_000 });
  const second = await startTarget({ mode: "idle", tag });
  expect(first.pid).toBeLessThan(second.pid);
  const child = spawn(process.execPath, [bin, "lock", "--cmdline", tag, "--all-matches", "--kind", "anon", "--max-pause-ms", "0.5", "--json"], { env });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => child.on("close", (code) => resolve(code ?? -1)));
  await waitUntil(() => vmLck(first.pid) > 0, "the first target's lock to begin", { timeoutMs: 30_000, intervalMs: 2 });
  await second.stop();
  const code = await exited;
  expect(stderr).toBe("");
  const report = JSON.parse(stdout);
  expect(code).toBe(0);
  expect(report.summary).toEqual({ done: 1, gone: 1, failed: 0, interrupted: 0, skipped: 0 });
  const [p1, p2] = report.processes;
  expect(p1.pid).toBe(first.pid);
  expect(p1.outcome).toBe("done");
  expect(p1.vmLck).toBe(vmLck(first.pid));
  expect(p2.pid).toBe(second.pid);
  expect(p2.outcome).toBe("gone");
  expect(p2.error.code).toBe("ESRCH");
  const text = await run(["unlock", "--cmdline", tag, "--all-matches", "--all"]);
  expect(text.code).toBe(0);
  expect(vmLck(first.pid)).toBe(0);
});

async function reservationTarget(): Promise<{ t: Target; reservedKb: number }> {
  const t = await startTarget({ mode: "idle", anonMb: 2, protNoneMb: 64, inprocessMlock: true });
  const reservedKb = kernelMappings(t.pid)
    .filter((m) => m.perms.startsWith("---"))
    .reduce((a, m) => a + Number(m.end - m.start) / 1024, 0);
  expect(reservedKb).toBeGreaterThanOrEqual(64 * 1024);
  return { t, reservedKb };
}

test("--all says what the kernel will hold (PROT_NONE reservations too) and warns; --all-accessible leaves them; doctor and --dry-run say which", async () => {
  const { t, reservedKb } = await reservationTarget();
  const pid = String(t.pid);

  const doctorAll = JSON.parse((await run(["doctor", "--pid", pid, "--all", "--json"])).stdout);
  const methodAll = doctorAll.processes[0].checks.find((c: { check: string }) => c.check === "method");
  expect(methodAll.detail).toMatch(/^mlockall\(MCL_CURRENT\).*PROT_NONE reservation/);
  const doctorAccessible = JSON.parse((await run(["doctor", "--pid", pid, "--all-accessible", "--json"])).stdout);
  expect(doctorAccessible.processes[0].checks.find((c: { check: string }) => c.check === "method").detail).toMatch(/^per-mapping mlock2/);

  const dry = await run(["lock", "--pid", pid, "--all", "--dry-run"]);
  expect(dry.code).toBe(0);
  expect(dry.stdout).toMatch(/would lock \d+ mapping\(s\), .* \(mlockall\).*VmLck would be/);
  expect(dry.stdout).toMatch(/warning: mlockall\(MCL_CURRENT\) would also mark \d+ PROT_NONE reservation\(s\)/);
  expect(vmLck(t.pid)).toBe(0);

  const locked = await run(["lock", "--pid", pid, "--all", "--json"]);
  expect(locked.code).toBe(0);
  const p = JSON.parse(locked.stdout).processes[0];
  expect(p.action.method).toBe("mlockall");
  expect(p.action.reservedBytes).toBeGreaterThanOrEqual(reservedKb * 1024);
  expect(p.warnings.join("\n")).toMatch(/also marked \d+ PROT_NONE reservation\(s\).*as with --future.*--all-accessible/);
  // What the report says is what the kernel holds: VmLck counts the reservations.
  expect(p.vmLck).toBe(vmLck(t.pid));
  expect(vmLck(t.pid)).toBeGreaterThanOrEqual(reservedKb * 1024);
  expect(Math.abs(p.action.vmLckAfter - p.vmLck)).toBeLessThan(1024 * 1024);
  expect(kernelMappings(t.pid).filter((m) => m.perms.startsWith("---")).every(isLockedVma)).toBe(true);
  expect((await run(["unlock", "--pid", pid, "--all"])).code).toBe(0);
  expect(vmLck(t.pid)).toBe(0);

  const accessible = await run(["lock", "--pid", pid, "--all-accessible", "--json"]);
  expect(accessible.code).toBe(0);
  const q = JSON.parse(accessible.stdout).processes[0];
  expect(q.action.method).toBe("mlock2 per range");
  expect(q.action.reservedBytes).toBe(0);
  expect(q.selection.inSync).toBe(true);
  expect(q.warnings).toEqual([]);
  const maps = kernelMappings(t.pid);
  expect(maps.filter((m) => m.perms.startsWith("---")).some(isLockedVma)).toBe(false);
  expect(maps.filter((m) => m.perms.startsWith("rw") && m.path === "").every(isLockedVma)).toBe(true);
  expect(q.vmLck).toBe(vmLck(t.pid));
  expect(vmLck(t.pid)).toBeLessThan(reservedKb * 1024);
  expect((await run(["unlock", "--pid", pid, "--all-accessible"])).code).toBe(0);
  expect(vmLck(t.pid)).toBe(0);
});

test("plain unlock after lock --all --future clears both; an unlock that leaves memory locked says what stays and how to clear it", async () => {
  const { t } = await reservationTarget();
  const pid = String(t.pid);
  expect((await run(["lock", "--pid", pid, "--all", "--future"])).code).toBe(0);
  expect(vmLck(t.pid)).toBeGreaterThan(0);

  const plain = await run(["unlock", "--pid", pid]);
  expect(plain.code).toBe(0);
  expect(plain.stdout).toMatch(/unlocked \d+ mapping\(s\).*\(munlockall\).*VmLck 0 B/);
  expect(plain.stdout).toMatch(/undoing the last lock .*--all with --future/);
  expect(vmLck(t.pid)).toBe(0);
  // MCL_FUTURE is cleared: a new mapping is not locked.
  expect((await t.control("mmap-anon 1")).ok).toBe(true);
  expect(vmLck(t.pid)).toBe(0);

  // An unlock of part of what --all locked: what stays, and the command that clears it.
  expect((await run(["lock", "--pid", pid, "--all", "--future"])).code).toBe(0);
  const part = await run(["unlock", "--pid", pid, "--perms", "r-x"]);
  expect(part.code).toBe(0);
  expect(part.stdout).toMatch(new RegExp(`warning: VmLck .* stays locked: \\d+ mapping\\(s\\) outside this selection .*PROT_NONE.*MCL_FUTURE stays set.*lockmem unlock --pid ${pid} --all`));
  expect(vmLck(t.pid)).toBeGreaterThan(0);
  expect((await run(["unlock", "--pid", pid, "--all"])).code).toBe(0);
  expect(vmLck(t.pid)).toBe(0);
  expect((await run(["unlock", "--pid", pid])).stdout).not.toMatch(/warning/);
});

test("unlock --future with --max-pause-ms keeps locked what is outside the selection", async () => {
  const t = await startTarget({ mode: "idle", anonMb: 4, inprocessMlock: true });
  const pid = String(t.pid);
  expect((await run(["lock", "--pid", pid, "--kind", "anon"])).code).toBe(0);
  expect((await run(["lock", "--pid", pid, "--future"])).code).toBe(0);
  const anonLocked = (): boolean[] => kernelMappings(t.pid).filter((m) => m.path === "" && m.perms.startsWith("rw")).map(isLockedVma);
  expect(anonLocked().every(Boolean)).toBe(true);
  const u = await run(["unlock", "--pid", pid, "--perms", "r-x", "--future", "--max-pause-ms", "1", "--json"]);
  expect(u.code).toBe(0);
  const p = JSON.parse(u.stdout).processes[0];
  expect(p.selection.lockedMappings).toBe(0);
  // What the earlier lock of the anon mappings set stays (it was unlocked by the munlockall
  // and never locked again when the chunks ran in the wrong order).
  expect(anonLocked().every(Boolean)).toBe(true);
  expect(p.vmLck).toBe(vmLck(t.pid));
  // MCL_FUTURE is cleared: a new mapping is not locked.
  const before = vmLck(t.pid);
  expect((await t.control("mmap-anon 1")).ok).toBe(true);
  expect(vmLck(t.pid)).toBe(before);
});
