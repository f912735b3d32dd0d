// Changing onFault or future on an existing LockedProcessMemory, through the real engine:
// each update leaves the selected mappings locked in the new mode only (VmFlags `lo`, and
// `lf` exactly when onFault), and MCL_FUTURE set or cleared as asked (a mapping the target
// makes afterwards is locked, in the right mode, or not at all). Read from /proc/PID/smaps.
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory } from "../../provider";
import { KernelMapping, kernelMappings } from "../support/smaps";
import { countChanges, withStack } from "../support/stack";
import { Target, startTarget } from "../support/target";
import { localStackSuite, nothingLocked } from "./lockmem-helpers";

jest.setTimeout(600_000);

const work = localStackSuite();

const SPECIAL = new Set(["[vdso]", "[vsyscall]", "[vvar]", "[vvar_vclock]"]);

/** The selection of the test (rw- mappings) as the kernel sees it: "L" locked, "F" on fault. */
function rwModes(pid: number): string[] {
  return kernelMappings(pid)
    .filter((m) => m.perms.startsWith("rw-") && !SPECIAL.has(m.path))
    .map((m) => `${m.flags.includes("lo") ? "L" : "-"}${m.flags.includes("lf") ? "F" : "-"}`);
}

function allIn(pid: number, mode: "L-" | "LF"): boolean {
  const modes = rwModes(pid);
  return modes.length > 0 && modes.every((m) => m === mode);
}

/** A new 1 MiB mapping in the target, as the kernel flags it: did MCL_FUTURE lock it, how? */
async function freshMapping(t: Target): Promise<string> {
  const reply = await t.control("mmap-anon 1");
  if (!reply.ok) throw new Error(`mmap-anon: ${reply.error}`);
  const start = BigInt(reply.start as string);
  const m = kernelMappings(t.pid).find((k: KernelMapping) => k.start <= start && start < k.end);
  if (!m) throw new Error(`no mapping at ${reply.start}`);
  return `${m.flags.includes("lo") ? "L" : "-"}${m.flags.includes("lf") ? "F" : "-"}`;
}

test("changing onFault and future updates in place and leaves no stale mode", async () => {
  const t = await startTarget({ anonMb: 4 });
  const program = (opts: { onFault: boolean; future: boolean }) => async () => {
    const r = new LockedProcessMemory("app", { target: { pid: t.pid }, mappings: { permissions: ["rw-"] }, onFault: opts.onFault, future: opts.future });
    return { inSync: r.inSync } as Record<string, pulumi.Output<unknown>>;
  };
  const steps: { onFault: boolean; future: boolean; selected: "L-" | "LF"; fresh: string }[] = [
    { onFault: true, future: false, selected: "LF", fresh: "--" },
    { onFault: false, future: false, selected: "L-", fresh: "--" },
    { onFault: false, future: true, selected: "L-", fresh: "L-" },
    { onFault: true, future: true, selected: "LF", fresh: "LF" },
    { onFault: false, future: true, selected: "L-", fresh: "L-" },
    { onFault: true, future: false, selected: "LF", fresh: "--" },
  ];
  await withStack(program(steps[0]), async (s) => {
    for (const [n, step] of steps.entries()) {
      const p = program(step);
      const r = await s.up({ program: p });
      const what = `step ${n} (onFault ${step.onFault}, future ${step.future})`;
      // The first up creates the stack and the resource; every later one updates in place.
      expect({ what, changes: r.changes }).toEqual({ what, changes: n === 0 ? { create: 2 } : { same: 1, update: 1 } });
      expect({ what, modes: allIn(t.pid, step.selected) ? "all " + step.selected : rwModes(t.pid).join(" ") }).toEqual({ what, modes: "all " + step.selected });
      // A mapping made now shows whether MCL_FUTURE (and MCL_ONFAULT with it) is in force.
      expect({ what, fresh: await freshMapping(t) }).toEqual({ what, fresh: step.fresh });
      // The fresh mapping is rw-: with future off it is new, unlocked and selected (drift
      // that the next up repairs); with it on it is already locked as selected.
      if (step.future) expect(countChanges((await s.preview({ program: p, expectNoChanges: true })).changes)).toBe(0);
    }
    await s.destroy();
    expect(nothingLocked(t.pid)).toBe(true);
    expect(await freshMapping(t)).toBe("--");
  }, { workDir: work.workDir });
});
