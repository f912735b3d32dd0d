// The memory cgroup (v2) a process belongs to: locked pages are charged to it, and
// locking more than it allows ends in the OOM killer, so plans are checked against it.
import { promises as fs } from "fs";
import * as path from "path";

export interface MemoryCgroup {
  path: string;
  /** Bytes; undefined when unlimited ("max"). */
  max?: number;
  current: number;
}

async function readNumber(file: string): Promise<number | undefined> {
  const text = (await fs.readFile(file, "utf8")).trim();
  return text === "max" ? undefined : Number(text);
}

/** undefined when the process is gone or the host has no cgroup v2 memory controller there. */
export async function readMemoryCgroup(pid: number, cgroupRoot = "/sys/fs/cgroup"): Promise<MemoryCgroup | undefined> {
  try {
    const line = (await fs.readFile(`/proc/${pid}/cgroup`, "utf8")).split("\n").find((l) => l.startsWith("0::"));
    if (!line) return undefined;
    const rel = line.slice(3);
    const dir = path.join(cgroupRoot, rel);
    const current = await readNumber(path.join(dir, "memory.current"));
    if (current === undefined) return undefined;
    return { path: rel, max: await readNumber(path.join(dir, "memory.max")), current };
  } catch {
    return undefined;
  }
}

/** Bytes that can still become resident before the cgroup hits memory.max. */
export function cgroupHeadroom(cg: MemoryCgroup | undefined): number | undefined {
  if (!cg || cg.max === undefined) return undefined;
  return Math.max(0, cg.max - cg.current);
}
