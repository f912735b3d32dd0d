import { readFileSync } from "fs";
import * as path from "path";
import { classifyMapping, isDeleted, parseSmaps, pathWithoutDeleted, readMappings } from "../../src/proc/smaps";
import { Mapping } from "../../src/types";

// Real /proc/PID/smaps of a small C program (tests/fixtures/proc), trimmed to one mapping of each sort:
// a binary under a path with a space, a heap, locked and lock-on-fault anonymous memory,
// PROT_NONE, SysV/memfd//dev/zero shared memory, a deleted file, vvar/vdso/vsyscall.
const sample = readFileSync(path.join(__dirname, "../fixtures/proc/smaps-sample.txt"), "utf8");

function byPath(mappings: Mapping[], p: string): Mapping {
  const found = mappings.find((m) => m.path === p);
  if (!found) throw new Error(`no mapping ${p}`);
  return found;
}

describe("parseSmaps", () => {
  const mappings = parseSmaps(sample);

  test("reads every mapping header", () => {
    expect(mappings).toHaveLength(24);
  });

  test("parses range, perms, offset, dev, inode and sizes in bytes", () => {
    const text = byPath(mappings.filter((m) => m.perms === "r-xp"), "/tmp/fx/my prog");
    expect(text).toMatchObject({
      start: 0x562561f65000n,
      end: 0x562561f66000n,
      perms: "r-xp",
      offset: 0x1000n,
      dev: "fe:00",
      inode: 9978048,
      kind: "file",
      size: 4096,
      rss: 4096,
      anonymous: 0,
      locked: 0,
    });
    expect(text.vmFlags).toEqual(["rd", "ex", "mr", "mw", "me"]);
  });

  test("keeps paths with spaces whole and the (deleted) marker", () => {
    expect(byPath(mappings, "/tmp/fx/dir with space/data file.bin").kind).toBe("file");
    const gone = byPath(mappings, "/tmp/fx/gone.bin (deleted)");
    expect(gone.kind).toBe("file");
    expect(isDeleted(gone)).toBe(true);
    expect(pathWithoutDeleted(gone.path)).toBe("/tmp/fx/gone.bin");
  });

  test("anonymous mappings have an empty path", () => {
    const anon = mappings.filter((m) => m.path === "");
    expect(anon.length).toBeGreaterThan(3);
    expect(anon.every((m) => m.kind === "anon")).toBe(true);
  });

  test("reads Locked and the lo / lf flags of locked memory", () => {
    const locked = mappings.find((m) => m.start === 0x7fbf359a7000n)!;
    expect(locked.locked).toBe(12 * 1024);
    expect(locked.vmFlags).toContain("lo");
    const onFault = mappings.find((m) => m.start === 0x7fbf359a3000n)!;
    expect(onFault.vmFlags).toEqual(expect.arrayContaining(["lo", "lf"]));
    expect(onFault.locked).toBe(4096);
  });

  test("classifies special and shared mappings", () => {
    expect(byPath(mappings, "[heap]").kind).toBe("heap");
    expect(byPath(mappings, "[stack]").kind).toBe("stack");
    expect(byPath(mappings, "[vdso]").kind).toBe("vdso");
    expect(byPath(mappings, "[vvar]").kind).toBe("vvar");
    expect(byPath(mappings, "[vvar_vclock]").kind).toBe("vvar");
    expect(byPath(mappings, "[vsyscall]").kind).toBe("vsyscall");
    expect(byPath(mappings, "/SYSV00000000 (deleted)").kind).toBe("shmem");
    expect(byPath(mappings, "/memfd:ring buf (deleted)").kind).toBe("shmem");
    expect(mappings.filter((m) => m.path === "/dev/zero (deleted)").map((m) => m.kind)).toEqual(["shmem", "shmem"]);
    expect(byPath(mappings, "/usr/lib/x86_64-linux-gnu/libc.so.6").kind).toBe("file");
  });

  test("classifies named anonymous, named shared and old-style thread stack mappings", () => {
    const text = [
      "7f0000000000-7f0000002000 rw-p 00000000 00:00 0                          [anon:jit cache]",
      "Size:                  8 kB",
      "Rss:                   8 kB",
      "Anonymous:             8 kB",
      "Locked:                0 kB",
      "VmFlags: rd wr mr mw me ac",
      "7f0000002000-7f0000003000 rw-s 00000000 00:01 7                          [anon_shmem:ring]",
      "Size:                  4 kB",
      "VmFlags: rd wr sh mr mw me ms",
      "7f0000004000-7f0000005000 rw-p 00000000 00:00 0                          [stack:4242]",
      "Size:                  4 kB",
      "VmFlags: rd wr mr mw me gd ac",
    ].join("\n");
    const parsed = parseSmaps(text);
    expect(parsed.map((m) => [m.path, m.kind])).toEqual([
      ["[anon:jit cache]", "anon"],
      ["[anon_shmem:ring]", "shmem"],
      ["[stack:4242]", "stack"],
    ]);
    expect(parsed[0].anonymous).toBe(8192);
  });

  test("an empty file (kernel thread, zombie) has no mappings", () => {
    expect(parseSmaps("")).toEqual([]);
  });

  test("text before any header is a format error", () => {
    expect(() => parseSmaps("Size: 4 kB\n")).toThrow(expect.objectContaining({ code: "EINTERNAL" }));
  });
});

describe("classifyMapping", () => {
  test.each([
    ["rw-p", "", "anon"],
    ["rw-s", "", "shmem"],
    ["rw-s", "/dev/shm/queue", "shmem"],
    ["rw-p", "/dev/shm/queue", "file"],
    ["rw-s", "/var/lib/db/data", "file"],
    ["r--p", "/memfd:x (deleted)", "file"],
    ["rw-p", "[uprobes]", "anon"],
  ])("%s %j is %s", (perms, p, kind) => {
    expect(classifyMapping(perms, p)).toBe(kind);
  });
});

describe("readMappings", () => {
  test("reads our own smaps", async () => {
    const mappings = await readMappings(process.pid);
    expect(mappings.some((m) => m.kind === "heap" || m.kind === "anon")).toBe(true);
    expect(mappings.some((m) => m.path.endsWith("/node") || m.path.includes("node"))).toBe(true);
  });

  test("a missing process is ESRCH", async () => {
    await expect(readMappings(1, "/nonexistent-proc")).rejects.toMatchObject({ code: "ESRCH", pid: 1 });
  });
});
