import { readFileSync } from "fs";
import * as path from "path";
import { parseSmaps } from "../../src/proc/smaps";
import { defaultSelection, effectiveSelection, isLocked, isLockOnFault, lockedByMlockall, notLockableReason, selectMappings, validateSelection } from "../../src/select";
import { Mapping, SelectionSpec } from "../../src/types";

const mappings = parseSmaps(readFileSync(path.join(__dirname, "../fixtures/proc/smaps-sample.txt"), "utf8"));
const paths = (list: Mapping[]): string[] => list.map((m) => `${m.perms} ${m.path}`);

describe("validateSelection", () => {
  test.each<[SelectionSpec, string]>([
    [{ permissions: ["rx"] }, "mappings.permissions[0]"],
    [{ permissions: ["r-x", "xwr"] }, "mappings.permissions[1]"],
    [{ permissions: ["r-xq"] }, "mappings.permissions[0]"],
    [{ permissions: [] }, "mappings.permissions"],
    [{ paths: [""] }, "mappings.paths[0]"],
    [{ paths: ["/usr/lib/[abc"] }, "mappings.paths[0]"],
    [{ paths: ["/usr/lib/*.so", "usr/lib/*.so"] }, "mappings.paths[1]"],
    [{ paths: ["/lib/[z-a]*"] }, "mappings.paths[0]"],
    [{ kinds: ["heap", "code" as "file"] }, "mappings.kinds[1]"],
    [{ all: true, permissions: ["r-x"] }, "mappings.all"],
    [{ perms: ["r-x"] } as unknown as SelectionSpec, "mappings.perms"],
  ])("%j is rejected at %s", (spec, field) => {
    expect(validateSelection(spec)).toMatchObject({ code: "EUSAGE", field });
  });

  test("good selections pass", () => {
    expect(validateSelection({})).toBeUndefined();
    expect(validateSelection(defaultSelection)).toBeUndefined();
    expect(validateSelection({ permissions: ["r-xp", "rw-s", "---"], paths: ["/usr/lib/**", "libc.so*", "\\[heap\\]"], kinds: ["file", "shmem"] })).toBeUndefined();
    expect(validateSelection({ all: true })).toBeUndefined();
    expect(validateSelection({ all: false, kinds: ["heap"] })).toBeUndefined();
  });

  test("a bad glob says how to write a literal bracket", () => {
    expect(validateSelection({ paths: ["[heap"] })?.message).toMatch(/unclosed '\['.*\\\[heap\\\]/);
  });
});

describe("selectMappings", () => {
  test("the default takes r-x and rwx, and reports [vdso] and [vsyscall]-like specials as not lockable", () => {
    const { selected, notLockable } = selectMappings(mappings, {});
    expect(paths(selected)).toEqual(["r-xp /tmp/fx/my prog", "r-xp /usr/lib/x86_64-linux-gnu/libc.so.6", "r-xp /tmp/fx/gone.bin (deleted)"]);
    expect(notLockable.map((n) => n.mapping.path)).toEqual(["[vdso]"]);
    expect(notLockable[0].reason).toMatch(/stays unlocked/);
  });

  test("permissions: OR within the list; a 4th letter also pins private/shared", () => {
    const { selected } = selectMappings(mappings, { permissions: ["rw-s"] });
    expect(selected.every((m) => m.perms === "rw-s")).toBe(true);
    expect(selected.map((m) => m.kind)).toEqual(["shmem", "shmem", "shmem", "shmem"]);
  });

  test("criteria combine with AND: anonymous rw- memory only", () => {
    const { selected } = selectMappings(mappings, { permissions: ["rw-"], kinds: ["anon", "heap"] });
    expect(selected.length).toBeGreaterThan(0);
    expect(selected.every((m) => m.perms.startsWith("rw-") && (m.kind === "anon" || m.kind === "heap"))).toBe(true);
    expect(selected.map((m) => m.kind)).toContain("heap");
  });

  test("kinds alone ignore the default permissions; PROT_NONE is reported, not selected", () => {
    const { selected, notLockable } = selectMappings(mappings, { kinds: ["anon"] });
    expect(selected.every((m) => m.kind === "anon")).toBe(true);
    expect(selected.some((m) => m.perms === "rw-p")).toBe(true);
    expect(notLockable).toHaveLength(1);
    expect(notLockable[0].mapping.perms).toBe("---p");
    expect(notLockable[0].reason).toMatch(/PROT_NONE/);
  });

  test("path globs: absolute, basename-only, paths with spaces, deleted files", () => {
    expect(paths(selectMappings(mappings, { paths: ["/usr/lib/**"] }).selected)).toEqual(["r-xp /usr/lib/x86_64-linux-gnu/libc.so.6"]);
    expect(paths(selectMappings(mappings, { paths: ["libc.so*"] }).selected)).toEqual(["r-xp /usr/lib/x86_64-linux-gnu/libc.so.6"]);
    expect(paths(selectMappings(mappings, { paths: ["/tmp/fx/dir with space/*"] }).selected)).toEqual([
      "r--p /tmp/fx/dir with space/data file.bin",
    ]);
    expect(paths(selectMappings(mappings, { paths: ["/tmp/fx/gone.bin"] }).selected)).toEqual(["r-xp /tmp/fx/gone.bin (deleted)"]);
    // AND with permissions: only the code of the program.
    expect(paths(selectMappings(mappings, { paths: ["**/my prog"], permissions: ["r-x"] }).selected)).toEqual(["r-xp /tmp/fx/my prog"]);
    // Anonymous memory has no path and never matches a glob.
    expect(selectMappings(mappings, { paths: ["**"] }).selected.some((m) => m.path === "")).toBe(false);
  });

  test("all takes everything and still reports what the kernel will not lock", () => {
    const { selected, notLockable } = selectMappings(mappings, { all: true });
    expect(selected.length + notLockable.length).toBe(mappings.length);
    expect(notLockable.map((n) => n.mapping.path).sort()).toEqual(["", "[vdso]", "[vsyscall]", "[vvar]", "[vvar_vclock]"]);
  });

  test("VM_IO / VM_PFNMAP mappings are not lockable", () => {
    const device: Mapping = { ...mappings[0], perms: "rw-s", path: "/dev/mem", kind: "file", vmFlags: ["rd", "wr", "sh", "io", "pf"] };
    expect(notLockableReason(device)).toMatch(/VmFlags io/);
    expect(selectMappings([device], { paths: ["/dev/mem"] }).notLockable).toHaveLength(1);
  });
});

test("isLocked and isLockOnFault read VmFlags", () => {
  const locked = mappings.find((m) => m.vmFlags.includes("lo") && !m.vmFlags.includes("lf"))!;
  const onFault = mappings.find((m) => m.vmFlags.includes("lf"))!;
  expect([isLocked(locked), isLockOnFault(locked)]).toEqual([true, false]);
  expect([isLocked(onFault), isLockOnFault(onFault)]).toEqual([true, true]);
  expect(isLocked(mappings[0])).toBe(false);
});

test("isLockOnFault reads the unnamed `??` of kernels before 6.2 only in VM_LOCKONFAULT's place (bit 19, after lo and bits 14-18)", () => {
  const flags = (vmFlags: string[]) => ({ vmFlags });
  // As 5.10 and 6.1 print an mlock2(MLOCK_ONFAULT) mapping (tests/guest).
  expect(isLockOnFault(flags(["rd", "wr", "mr", "mw", "me", "lo", "??", "ac", "sd"]))).toBe(true);
  expect(isLockOnFault(flags(["rd", "wr", "mr", "mw", "me", "lo", "dc", "??", "ac"]))).toBe(true);
  expect(isLockOnFault(flags(["rd", "wr", "mr", "mw", "me", "lo", "ac", "sd"]))).toBe(false);
  // An unnamed bit elsewhere is not VM_LOCKONFAULT.
  expect(isLockOnFault(flags(["rd", "wr", "mr", "mw", "me", "lo", "ac", "??"]))).toBe(false);
  expect(isLockOnFault(flags(["rd", "??", "wr", "lo", "ac"]))).toBe(false);
  expect(isLockOnFault(flags(["rd", "wr", "mr", "mw", "me", "??", "ac"]))).toBe(false);
});

test("allAccessible: every mapping the kernel can lock one by one; not combined with other criteria", () => {
  const { selected, notLockable } = selectMappings(mappings, { allAccessible: true });
  expect(selected.length).toBeGreaterThan(0);
  expect(selected.every((m) => notLockableReason(m) === undefined)).toBe(true);
  expect(selected.length + notLockable.length).toBe(mappings.length);
  expect(validateSelection({ allAccessible: true })).toBeUndefined();
  for (const spec of [{ allAccessible: true, all: true }, { allAccessible: true, permissions: ["r-x"] }]) {
    const e = validateSelection(spec);
    expect(e?.code).toBe("EUSAGE");
    expect(e?.field).toBe("mappings.allAccessible");
  }
  expect(validateSelection({ allAccessible: "yes" } as unknown as SelectionSpec)?.field).toBe("mappings.allAccessible");
});

test("lockedByMlockall: lockable mappings and PROT_NONE reservations, never [vdso]/[vvar]/[vsyscall]", () => {
  const byMlockall = mappings.filter(lockedByMlockall);
  const reservations = mappings.filter((m) => m.perms.startsWith("---"));
  for (const m of reservations) expect(lockedByMlockall(m)).toBe(true);
  for (const m of mappings.filter((x) => ["vdso", "vvar", "vsyscall"].includes(x.kind))) expect(lockedByMlockall(m)).toBe(false);
  expect(byMlockall.length).toBe(mappings.filter((m) => notLockableReason(m) === undefined).length + reservations.length);
});

test("effectiveSelection: the default applies when no criterion is named, wherever it is asked", () => {
  for (const none of [undefined, {}, { all: false }, { allAccessible: false }, { all: false, allAccessible: false }]) {
    expect(effectiveSelection(none as SelectionSpec | undefined)).toBe(defaultSelection);
  }
  const kinds: SelectionSpec = { all: false, kinds: ["heap"] };
  expect(effectiveSelection(kinds)).toBe(kinds);
  expect(effectiveSelection({ all: true })).toEqual({ all: true });
});
