import { mergeAdjacent, pauseBoundedSteps, planLock, planUnlock, TargetFacts } from "../../src/plan";
import { Mapping } from "../../src/types";

const nr = { mlock2: 325, munlock: 150, mlockall: 151, munlockall: 152 };
const KB = 1024;

function m(start: number, sizeKb: number, perms: string, path: string, flags: string[] = [], rssKb = sizeKb): Mapping {
  const s = BigInt(start);
  return {
    start: s,
    end: s + BigInt(sizeKb * KB),
    perms,
    offset: 0n,
    dev: "00:00",
    inode: 0,
    path,
    kind: path === "" ? "anon" : path.startsWith("[") ? (path === "[heap]" ? "heap" : path === "[stack]" ? "stack" : "vdso") : "file",
    size: sizeKb * KB,
    rss: rssKb * KB,
    anonymous: 0,
    locked: 0,
    vmFlags: ["rd", ...flags],
  };
}

const text1 = m(0x1000, 8, "r-xp", "/bin/a");
const text2 = m(0x3000, 4, "r-xp", "/bin/a"); // adjacent to text1
const data = m(0x4000, 4, "rw-p", "/bin/a");
const lib = m(0x10000, 16, "r-xp", "/lib/b.so", [], 4);
const lockedLib = m(0x20000, 4, "r-xp", "/lib/c.so", ["lo"]);
const guard = m(0x30000, 64, "---p", "");
const vdso = m(0x40000, 8, "r-xp", "[vdso]");

function facts(mappings: Mapping[], extra: Partial<TargetFacts> = {}): TargetFacts {
  return { mappings, vmLck: 4 * KB, vmSize: 1 << 20, capIpcLock: false, ...extra };
}

test("adjacent mappings merge into one range, others stay apart", () => {
  const ranges = mergeAdjacent([lib, text2, text1]);
  expect(ranges.map((r) => [r.start, r.end])).toEqual([
    [0x1000n, 0x4000n],
    [0x10000n, 0x14000n],
  ]);
});

test("default lock: r-x mappings not yet locked, one call per range, undo for each, limit counts VmLck", () => {
  const plan = planLock(facts([text1, text2, data, lib, lockedLib, guard, vdso]), { permissions: ["r-x", "rwx"] }, {}, nr);
  expect(plan.whole).toBe(false);
  expect(plan.ops).toEqual([
    { nr: 325, args: [0x1000n, 0x3000n, 0n], undo: { nr: 150, args: [0x1000n, 0x3000n] } },
    { nr: 325, args: [0x10000n, 0x4000n, 0n], undo: { nr: 150, args: [0x10000n, 0x4000n] } },
  ]);
  expect(plan.unchanged).toEqual([lockedLib]);
  expect(plan.notLockable.map((n) => n.mapping)).toEqual([vdso]);
  expect(plan.bytes).toBe(28 * KB);
  expect(plan.residentBytes).toBe(12 * KB); // lib has 4 of 16 kB resident
  expect(plan.neededLimit).toBe(BigInt(4 * KB + 28 * KB));
});

test("CAP_IPC_LOCK needs no limit; on-fault adds the flag and makes nothing resident; future comes last", () => {
  const plan = planLock(facts([text1], { capIpcLock: true }), { permissions: ["r-x"] }, { onFault: true, future: true }, nr);
  expect(plan.neededLimit).toBe(0n);
  expect(plan.residentBytes).toBe(0);
  expect(plan.ops[0].args[2]).toBe(1n);
  expect(plan.ops[plan.ops.length - 1]).toEqual({ nr: 151, args: [BigInt(2 | 4)] });
});

test("all: one mlockall checked against the whole VmSize", () => {
  const plan = planLock(facts([text1, guard]), { all: true }, { future: true }, nr);
  expect(plan.ops).toEqual([{ nr: 151, args: [3n] }]);
  expect(plan.neededLimit).toBe(BigInt(1 << 20));
  expect(plan.notLockable.map((n) => n.mapping)).toEqual([guard]);
});

test("unlock: only locked mappings; with future, munlockall then relock what stays", () => {
  const onFaultLocked = m(0x50000, 4, "r-xp", "/lib/d.so", ["lo", "lf"]);
  const plan = planUnlock(facts([text1, lockedLib, onFaultLocked]), { paths: ["/lib/c.so"] }, {}, nr);
  expect(plan.ops).toEqual([{ nr: 150, args: [0x20000n, 0x1000n] }]);
  const withFuture = planUnlock(facts([text1, lockedLib, onFaultLocked]), { paths: ["/lib/c.so"] }, { future: true }, nr);
  expect(withFuture.ops).toEqual([
    { nr: 152, args: [] },
    { nr: 325, args: [0x50000n, 0x1000n, 1n] },
  ]);
});

test("bounded pauses: range calls become chunkable, mlockall runs last after chunked per-mapping locks", () => {
  const plan = planLock(facts([text1, text2, lib, guard]), { all: true }, {}, nr);
  const steps = pauseBoundedSteps(plan, [text1, text2, lib, guard], nr);
  expect(steps.finalOps).toEqual([{ nr: 151, args: [1n] }]);
  expect(steps.ranges.map((r) => [r.nr, r.start, r.end, r.undoNr])).toEqual([
    [325, 0x1000n, 0x4000n, 150],
    [325, 0x10000n, 0x14000n, 150],
  ]);
  const unlockAll = planUnlock(facts([lockedLib, text1]), { all: true }, {}, nr);
  const u = pauseBoundedSteps(unlockAll, [lockedLib, text1], nr);
  expect(u.finalOps).toEqual([{ nr: 152, args: [] }]);
  expect(u.ranges.map((r) => [r.nr, r.start, r.end])).toEqual([[150, 0x20000n, 0x21000n]]);
});

test("bounded pauses, unlock that clears MCL_FUTURE: the selection in chunks, then munlockall, then what stays locked again", () => {
  const keep = m(0x50000, 4, "rw-p", "", ["lo", "lf"]);
  const plan = planUnlock(facts([lockedLib, keep]), { permissions: ["r-x"] }, { future: true }, nr);
  const steps = pauseBoundedSteps(plan, [lockedLib, keep], nr);
  expect(steps.ranges.map((r) => [r.nr, r.start, r.end])).toEqual([[150, 0x20000n, 0x21000n]]);
  expect(steps.finalOps).toEqual([{ nr: 152, args: [] }]);
  expect(steps.relock.map((r) => [r.nr, r.start, r.end, r.extraArgs])).toEqual([[325, 0x50000n, 0x51000n, [1n]]]);
});
