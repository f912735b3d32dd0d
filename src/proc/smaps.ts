// /proc/PID/smaps: one record per VMA, a header line followed by "Key: value" lines.
import { Mapping, MappingKind } from "../types";
import { DEFAULT_PROC_ROOT, procFormatError, readProcFile } from "./read";

// start-end perms offset dev inode, then padding, then the path (which may contain spaces).
const HEADER = /^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)(?: +(.*))?$/;
const SIZE_FIELD = /^(\w+):\s+(\d+) kB$/;

/** The kernel appends this to the path of a mapping whose file was unlinked. */
export const DELETED_SUFFIX = " (deleted)";

export function isDeleted(mapping: Pick<Mapping, "path">): boolean {
  return mapping.path.endsWith(DELETED_SUFFIX);
}

/** The path without the kernel's " (deleted)" marker: the file the mapping came from. */
export function pathWithoutDeleted(mappingPath: string): string {
  return mappingPath.endsWith(DELETED_SUFFIX) ? mappingPath.slice(0, -DELETED_SUFFIX.length) : mappingPath;
}

const SPECIAL_KINDS: Record<string, MappingKind> = {
  "[heap]": "heap",
  "[stack]": "stack",
  "[vdso]": "vdso",
  "[vvar]": "vvar",
  "[vvar_vclock]": "vvar",
  "[vsyscall]": "vsyscall",
};

// Shared anonymous memory is backed by shmem files the kernel names "/dev/zero (deleted)"
// (MAP_SHARED|MAP_ANONYMOUS, or a shared map of /dev/zero), "/SYSV<key> (deleted)" (shmat),
// "/memfd:<name> (deleted)" (memfd_create) or "[anon_shmem:<name>]" (named with PR_SET_VMA).
// Files under /dev/shm are POSIX shared memory (shm_open), also shmem.
function isShmemPath(p: string): boolean {
  return (
    p === "" ||
    p.startsWith("/dev/zero") ||
    p.startsWith("/SYSV") ||
    p.startsWith("/memfd:") ||
    p.startsWith("/dev/shm/") ||
    p.startsWith("[anon_shmem")
  );
}

/** What a mapping is, from its pseudo-path and sharing letter. */
export function classifyMapping(perms: string, mappingPath: string): MappingKind {
  const special = SPECIAL_KINDS[mappingPath];
  if (special) return special;
  // Older kernels (< 4.5) named thread stacks "[stack:TID]".
  if (/^\[stack:\d+\]$/.test(mappingPath)) return "stack";
  if (perms[3] === "s" && isShmemPath(mappingPath)) return "shmem";
  if (mappingPath.startsWith("/")) return "file";
  // "", "[anon:name]" and other bracketed pseudo-paths are private anonymous memory.
  return "anon";
}

function kbToBytes(kb: string): number {
  return Number(kb) * 1024;
}

/** Parses the whole text of /proc/PID/smaps. Fields we do not use are ignored. */
export function parseSmaps(text: string): Mapping[] {
  const mappings: Mapping[] = [];
  let current: Mapping | undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") continue;
    const header = HEADER.exec(line);
    if (header) {
      const [, start, end, perms, offset, dev, inode, rawPath] = header;
      const mappingPath = rawPath ?? "";
      current = {
        start: BigInt("0x" + start),
        end: BigInt("0x" + end),
        perms,
        offset: BigInt("0x" + offset),
        dev,
        inode: Number(inode),
        path: mappingPath,
        kind: classifyMapping(perms, mappingPath),
        size: 0,
        rss: 0,
        anonymous: 0,
        locked: 0,
        vmFlags: [],
      };
      mappings.push(current);
      continue;
    }
    if (!current) throw procFormatError("smaps", `line ${i + 1} comes before any mapping header: ${JSON.stringify(line)}`);
    if (line.startsWith("VmFlags:")) {
      current.vmFlags = line.slice("VmFlags:".length).trim().split(/\s+/).filter((flag) => flag !== "");
      continue;
    }
    const field = SIZE_FIELD.exec(line);
    if (!field) continue;
    const [, key, kb] = field;
    if (key === "Size") current.size = kbToBytes(kb);
    else if (key === "Rss") current.rss = kbToBytes(kb);
    else if (key === "Anonymous") current.anonymous = kbToBytes(kb);
    else if (key === "Locked") current.locked = kbToBytes(kb);
  }
  return mappings;
}

/** The target's mappings now. Kernel threads and zombies have none. */
export async function readMappings(pid: number, procRoot: string = DEFAULT_PROC_ROOT): Promise<Mapping[]> {
  return parseSmaps(await readProcFile(pid, "smaps", procRoot));
}
