// Targets under a seccomp filter: lockmem reads the filter (PTRACE_SECCOMP_GET_FILTER),
// evaluates it for every call it would make, and refuses before making any call unless
// all are allowed. The filter can be suspended for lockmem's calls only, on explicit
// opt-in (allowSeccompSuspend / --allow-seccomp-suspend). The kill filter is never
// triggered: its target must survive everything below.
import { execFile } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../support/repo";
import * as api from "../../src/api";
import { LockError } from "../../src/errors";
import { startTarget, stopAllTargets, Target, workDir } from "../support/target";
import { isLockedVma, isTraced, kernelMappings, lockFingerprint, vmLckKb } from "../support/smaps";
import { startStress, stopStress } from "../support/stress";

jest.setTimeout(120_000);
afterAll(stopAllTargets);
// Quiet, or under CPU stress in the second pass of scripts/test.sh (races show under load).
beforeAll(startStress);
afterAll(stopStress);

const root = repoRoot();
const stateDir = path.join(workDir(), `state-seccomp-${process.pid}`);
beforeAll(() => {
  process.env.LOCKMEM_STATE_DIR = stateDir;
});

function procStatus(pid: number, field: string): string | undefined {
  const m = new RegExp(`^${field}:\\s+(.*)$`, "m").exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m?.[1];
}

function anonLocked(pid: number): boolean[] {
  return kernelMappings(pid)
    .filter((m) => m.path === "" && m.perms.startsWith("rw"))
    .map(isLockedVma);
}

async function refusal(p: Promise<unknown>): Promise<LockError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LockError);
    return err as LockError;
  }
  throw new Error("expected a seccomp refusal, but the call succeeded");
}

/** Alive, untraced, running, its filter still in place. */
function expectUnharmed(t: Target): void {
  expect(t.isAlive()).toBe(true);
  expect(isTraced(t.pid)).toBe(false);
  expect(t.state()).not.toBe("T");
  expect(procStatus(t.pid, "Seccomp")).toBe("2");
  expect(procStatus(t.pid, "Seccomp_filters")).toBe("1");
}

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(root, "bin", "lockmem"), ...args], { env: { ...process.env, LOCKMEM_STATE_DIR: stateDir } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test("a filter that allows mlock: lock and unlock work, per mapping and whole, without any opt-in", async () => {
  const t = await startTarget({ mode: "sleep", sleepMs: 20, anonMb: 8, seccomp: "kill-other" });
  expect(procStatus(t.pid, "Seccomp")).toBe("2");
  const r = await api.lock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] } });
  expect(r.processes[0].seccomp).toBe(2);
  expect(anonLocked(t.pid).every(Boolean)).toBe(true);
  await api.unlock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] } });
  expect(anonLocked(t.pid).some(Boolean)).toBe(false);
  await api.lock({ target: { pid: t.pid }, mappings: { all: true } });
  expect(vmLckKb(t.pid)).toBeGreaterThan(8 * 1024);
  await api.unlock({ target: { pid: t.pid }, mappings: { all: true } });
  expect(vmLckKb(t.pid)).toBe(0);
  const s = await t.stats();
  expect(s.sleep.violations).toBe(0);
  expect(s.sleep.eintr).toBe(0);
  expectUnharmed(t);
});

describe.each(["errno-mlock", "kill-mlock"] as const)("a filter that denies mlock (%s)", (seccomp) => {
  test("refused before any call, nothing changed, the target lives; the same without the opt-in", async () => {
    const t = await startTarget({ mode: "sleep", sleepMs: 20, anonMb: 8, threads: 2, seccomp });
    const before = lockFingerprint(t.pid);
    const refusals: string[] = [];
    for (const mappings of [undefined, { kinds: ["anon" as const] }, { all: true }]) {
      for (const allowSeccompSuspend of [undefined, false]) {
        const e = await refusal(api.lock({ target: { pid: t.pid }, mappings, allowSeccompSuspend }));
        expect(e.code).toBe("ESECCOMP");
        expect(e.stage).toBe("seccomp");
        expect(e.message).toMatch(/seccomp filter of process \d+ answers syscall \d+ with/);
        expect(e.message).toMatch(/did not make it call anything/);
        expect(e.hint).toMatch(/--allow-seccomp-suspend/);
        refusals.push(e.message.replace(/process \d+/, "process P"));
        expect(lockFingerprint(t.pid)).toBe(before);
        expectUnharmed(t);
      }
    }
    console.log(`seccomp ${seccomp}: refusals ${JSON.stringify([...new Set(refusals)])}`);
    // The CLI says the same and exits 1.
    const out = await cli(["lock", "--pid", String(t.pid), "--kind", "anon"]);
    expect(out.code).toBe(1);
    expect(out.stderr).toMatch(/seccomp/);
    expect(lockFingerprint(t.pid)).toBe(before);
    const s = await t.stats();
    expect(s.sleep.violations).toBe(0);
    expect(s.sleep.eintr).toBe(0);
    expectUnharmed(t);
  });

  test("with the opt-in: locked and unlocked, the filter is back in force afterwards", async () => {
    const t = await startTarget({ mode: "sleep", sleepMs: 20, anonMb: 8, threads: 2, seccomp, inprocessMlock: true });
    const r = await api.lock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] }, allowSeccompSuspend: true });
    expect(r.processes[0].action?.changedMappings).toBeGreaterThan(0);
    expect(anonLocked(t.pid).every(Boolean)).toBe(true);
    expectUnharmed(t);
    // The filter is evaluated per call: munlock is allowed by it, so unlocking needs no opt-in.
    await api.unlock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] } });
    expect(anonLocked(t.pid).some(Boolean)).toBe(false);
    expectUnharmed(t);

    // Whole (mlockall / munlockall), through the CLI flag.
    const lock = await cli(["lock", "--pid", String(t.pid), "--all", "--allow-seccomp-suspend", "--json"]);
    expect(lock.code).toBe(0);
    expect(vmLckKb(t.pid)).toBeGreaterThan(8 * 1024);
    const unlock = await cli(["unlock", "--pid", String(t.pid), "--all", "--allow-seccomp-suspend"]);
    expect(unlock.code).toBe(0);
    expect(vmLckKb(t.pid)).toBe(0);
    const s = await t.stats();
    expect(s.sleep.violations).toBe(0);
    expect(s.sleep.eintr).toBe(0);
    expectUnharmed(t);

    // The suspension covered lockmem's calls only: the target's own mlock meets its filter.
    const anon = s.mappings.find((m) => m.kind === "anon");
    expect(anon).toBeDefined();
    if (seccomp === "errno-mlock") {
      expect(await t.control(`mlock ${anon?.start} 4096`)).toMatchObject({ ok: false, errno: 1 });
      expect(t.isAlive()).toBe(true);
    } else {
      await expect(t.control(`mlock ${anon?.start} 4096`, 3000)).rejects.toThrow();
      await t.waitForExit();
    }
  });
});
