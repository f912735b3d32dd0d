// target.match "all" when some matching processes lock and others fail, through the real
// engine: the error names the pids that failed, each failed process is left as it was, and
// the state records what was locked (the provider reports a partial create/update), so that
// destroy unlocks it, and refresh and the next up converge.
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory } from "../../provider";
import { memlockLimit } from "../support/smaps";
import { countChanges, withStack } from "../support/stack";
import { startTarget } from "../support/target";
import { codeLocked, localStackSuite, nothingLocked } from "./lockmem-helpers";

jest.setTimeout(600_000);

const work = localStackSuite();

interface StateProcess {
  pid: number;
  lockedBytes: number;
}

test('match "all": a partial lock is recorded, the error names the failed pids, destroy unlocks what was locked, up converges; the same for an update', async () => {
  const tag = `lmpartial-${Math.random().toString(36).slice(2, 10)}`;
  const good = await startTarget({ tag, anonMb: 4 });
  // Root without CAP_IPC_LOCK and a 64 KiB RLIMIT_MEMLOCK: its code does not fit unless
  // raiseMemlockLimit is set, so its lock fails (before anything is done to it).
  const limited = await startTarget({ tag, dropCapIpcLock: { memlockKb: 64 } });
  const limitBefore = memlockLimit(limited.pid);

  const program = (raiseMemlockLimit: boolean) => async () => {
    const r = new LockedProcessMemory("all", { target: { cmdline: tag, match: "all" }, raiseMemlockLimit });
    return { pids: r.processes.apply((ps) => ps.map((p) => p.pid).sort((a, b) => a - b)), inSync: r.inSync } as Record<string, pulumi.Output<unknown>>;
  };
  const strict = program(false);
  const raising = program(true);

  await withStack(strict, async (s) => {
    const recorded = async (): Promise<{ processes: StateProcess[]; initErrors?: string[] } | undefined> => {
      const state = await s.exportState();
      const r = (state.deployment.resources ?? []).find((x: { urn: string }) => x.urn.endsWith("LockedProcessMemory:Resource::all"));
      return r && { processes: (r.outputs?.processes ?? []) as StateProcess[], initErrors: r.initErrors };
    };
    const upError = async (p: typeof strict): Promise<string> =>
      s.up({ program: p }).then(
        () => "",
        (e: Error) => e.message,
      );

    // 1. Create locks one of two: the error names the failed pid and what is locked; the
    //    failed target is as it was; the state holds the locked one.
    const first = await upError(strict);
    expect(first).toMatch(new RegExp(`lock failed for 1 of 2 processes: process ${limited.pid}: .*RLIMIT_MEMLOCK`));
    expect(first).toMatch(new RegExp(`locked in process ${good.pid}, which the state records`));
    expect(codeLocked(good.pid)).toBe(true);
    expect(nothingLocked(limited.pid)).toBe(true);
    expect(memlockLimit(limited.pid)).toEqual(limitBefore);
    const partial = await recorded();
    expect(partial?.processes.map((p) => p.pid)).toEqual([good.pid]);
    expect(partial?.processes[0].lockedBytes).toBeGreaterThan(0);
    expect(partial?.initErrors?.join(" ")).toContain(`process ${limited.pid}`);

    // 2. destroy unlocks what was locked.
    await s.destroy();
    expect(nothingLocked(good.pid)).toBe(true);
    expect(nothingLocked(limited.pid)).toBe(true);

    // 3. The same partial lock again; preview plans to finish it, refresh finds both
    //    processes, and the up that can lock both converges.
    expect(await upError(strict)).toMatch(new RegExp(`process ${limited.pid}`));
    expect((await recorded())?.processes.map((p) => p.pid)).toEqual([good.pid]);
    expect((await s.preview({ program: strict })).changes.update).toBe(1);
    await s.refresh();
    expect((await recorded())?.processes.map((p) => p.pid).sort()).toEqual([good.pid, limited.pid].sort());
    const converged = await s.up({ program: raising });
    expect(converged.outputs.pids).toEqual([good.pid, limited.pid].sort((a, b) => a - b));
    expect(converged.outputs.inSync).toBe(true);
    expect(codeLocked(good.pid)).toBe(true);
    expect(codeLocked(limited.pid)).toBe(true);
    expect((await recorded())?.initErrors ?? []).toEqual([]);
    expect(countChanges((await s.preview({ program: raising, expectNoChanges: true })).changes)).toBe(0);

    // 4. destroy unlocks both and puts the raised limit back.
    await s.destroy();
    expect(nothingLocked(good.pid)).toBe(true);
    expect(nothingLocked(limited.pid)).toBe(true);
    expect(memlockLimit(limited.pid)).toEqual(limitBefore);

    // 5. A partial update is recorded the same way: both locked, then the limited process
    //    restarts, and an update that cannot lock the new one keeps what it did lock.
    await s.up({ program: raising });
    await limited.stop();
    const restarted = await startTarget({ tag, dropCapIpcLock: { memlockKb: 64 } });
    const restartedLimit = memlockLimit(restarted.pid);
    const updateError = await upError(strict);
    expect(updateError).toMatch(new RegExp(`lock failed for 1 of 2 processes: process ${restarted.pid}: .*RLIMIT_MEMLOCK`));
    expect((await recorded())?.processes.map((p) => p.pid)).toEqual([good.pid]);
    expect(codeLocked(good.pid)).toBe(true);
    expect(nothingLocked(restarted.pid)).toBe(true);
    expect(memlockLimit(restarted.pid)).toEqual(restartedLimit);
    await s.destroy();
    expect(nothingLocked(good.pid)).toBe(true);
    expect(nothingLocked(restarted.pid)).toBe(true);
  }, { workDir: work.workDir });
});
