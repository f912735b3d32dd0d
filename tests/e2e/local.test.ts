// LockedProcessMemory on this machine (no connection), through the real Pulumi engine:
// up, no-change preview, drift (restart, unlock behind Pulumi's back), repair, mapping
// changes, raised limits, bad inputs, destroy. One stack for the whole story: the engine
// is slow, so each step builds on the one before.
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory, LockedProcessMemoryArgs } from "../../provider";
import { lockFingerprint, memlockLimit } from "../support/smaps";
import { countChanges, withStack } from "../support/stack";
import { Target, startTarget } from "../support/target";
import { codeLocked, localStackSuite, lockmemCli, mappingsWith, nothingLocked, uniqueName } from "./lockmem-helpers";

jest.setTimeout(600_000);

const work = localStackSuite();

interface Scenario {
  app: Partial<LockedProcessMemoryArgs>;
  limited?: boolean;
}

test("local host: lock, preview, drift, repair, mapping changes, limits, bad inputs, destroy", async () => {
  const comm = uniqueName("lme2e");
  let app: Target = await startTarget({ comm, anonMb: 8 });
  // Root without CAP_IPC_LOCK and a 64 KiB limit: locking its code (some MiB, below the
  // 8 MiB hard limit) needs a raised soft limit.
  const limited = await startTarget({ dropCapIpcLock: { memlockKb: 64 } });
  const limitBefore = memlockLimit(limited.pid);

  const program = (s: Scenario) => async () => {
    const r = new LockedProcessMemory("app", { target: { name: comm }, ...s.app });
    const out: Record<string, pulumi.Output<unknown>> = {
      pid: r.processes.apply((p) => p[0]?.pid),
      inSync: r.inSync,
      lockedBytes: r.lockedBytes,
      host: r.host,
    };
    if (s.limited !== false) {
      const l = new LockedProcessMemory("limited", { target: { pid: limited.pid }, raiseMemlockLimit: true });
      out.limitedBytes = l.lockedBytes;
    }
    return out;
  };
  const base = program({ app: {} });

  await withStack(base, async (s) => {
    // up locks the code of the target; preview right after shows nothing to do.
    const created = await s.up({ program: base });
    expect(created.changes.create).toBe(3); // the stack and two resources
    expect(created.outputs.pid).toBe(app.pid);
    expect(created.outputs.inSync).toBe(true);
    expect(created.outputs.lockedBytes).toBeGreaterThan(0);
    expect(codeLocked(app.pid)).toBe(true);
    expect(codeLocked(limited.pid)).toBe(true);
    expect(Number(memlockLimit(limited.pid).soft)).toBeGreaterThan(Number(limitBefore.soft));
    expect(countChanges((await s.preview({ program: base, expectNoChanges: true })).changes)).toBe(0);

    // The target restarts (new pid, unlocked): refresh shows it, preview plans an update,
    // up locks the new process.
    await app.stop();
    app = await startTarget({ comm, anonMb: 8 });
    expect(codeLocked(app.pid)).toBe(false);
    const afterRestart = await s.refresh();
    expect(afterRestart.changes.update).toBe(1);
    expect(afterRestart.changes.delete ?? 0).toBe(0);
    expect((await s.preview({ program: base })).changes.update).toBe(1);
    const repaired = await s.up({ program: base });
    expect(repaired.changes.update).toBe(1);
    expect(repaired.outputs.pid).toBe(app.pid);
    expect(codeLocked(app.pid)).toBe(true);

    // Unlocked behind Pulumi's back: the same.
    lockmemCli("unlock", "--pid", String(app.pid));
    expect(mappingsWith(app.pid, "r-x").locked).toBe(0);
    expect((await s.refresh()).changes.update).toBe(1);
    expect((await s.preview({ program: base })).changes.update).toBe(1);
    expect((await s.up({ program: base })).changes.update).toBe(1);
    expect(codeLocked(app.pid)).toBe(true);
    expect(countChanges((await s.refresh()).changes)).toBe(0);

    // Changing mappings updates in place; what is no longer selected is unlocked.
    const wider = program({ app: { mappings: { permissions: ["r-x", "rw-"] } } });
    const widened = await s.up({ program: wider });
    expect(widened.changes.update).toBe(1);
    expect(widened.changes.create ?? 0).toBe(0);
    expect(mappingsWith(app.pid, "rw-").unlocked).toBe(0);
    expect(codeLocked(app.pid)).toBe(true);
    const narrower = program({ app: { mappings: { permissions: ["rw-"] } } });
    const narrowed = await s.up({ program: narrower });
    expect(narrowed.changes.update).toBe(1);
    expect(mappingsWith(app.pid, "r-x").locked).toBe(0);
    expect(mappingsWith(app.pid, "rw-").unlocked).toBe(0);
    expect(countChanges((await s.preview({ program: narrower, expectNoChanges: true })).changes)).toBe(0);

    // Bad inputs: preview fails with one message per property, and nothing on the host changes.
    const before = lockFingerprint(app.pid);
    const previewError = (program: () => Promise<Record<string, unknown>>): Promise<string> =>
      s.preview({ program }).then(
        () => "",
        (e: Error) => e.message,
      );
    const twoBad = await previewError(async () => {
      new LockedProcessMemory("app", { target: { pid: app.pid, name: comm }, mappings: { permissions: ["rwz"] } });
      return {};
    });
    expect(twoBad).toMatch(/property target .* set exactly one of pid, pidFile, systemdUnit, name, cmdline/);
    expect(twoBad).toMatch(/property mappings .* "rwz" is not a permission string/);
    const badPatterns = await previewError(async () => {
      new LockedProcessMemory("app", { target: { cmdline: "([unclosed" }, mappings: { paths: ["[heap"] } });
      return {};
    });
    expect(badPatterns).toMatch(/target\.cmdline: invalid regular expression/);
    expect(badPatterns).toMatch(/mappings\.paths\[0\]: "\[heap" has an unclosed '\['/);
    expect(lockFingerprint(app.pid)).toBe(before);

    // destroy unlocks everything and restores the raised limit.
    const destroyed = await s.destroy();
    expect(destroyed.changes.delete).toBe(3);
    expect(nothingLocked(app.pid)).toBe(true);
    expect(nothingLocked(limited.pid)).toBe(true);
    expect(memlockLimit(limited.pid)).toEqual(limitBefore);
  }, { workDir: work.workDir });
});
