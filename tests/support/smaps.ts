// An independent reader of /proc/PID/smaps for assertions: tests check the kernel's view
// with this, never with the code under test.
import * as fs from "fs";

export interface KernelMapping {
  start: bigint;
  end: bigint;
  perms: string;
  path: string;
  lockedKb: number;
  rssKb: number;
  flags: string[];
}

export function kernelMappings(pid: number): KernelMapping[] {
  const out: KernelMapping[] = [];
  let cur: KernelMapping | undefined;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      cur = { start: BigInt("0x" + head[1]), end: BigInt("0x" + head[2]), perms: head[3], path: head[4], lockedKb: 0, rssKb: 0, flags: [] };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const kv = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (kv && kv[1] === "Locked") cur.lockedKb = Number(kv[2]);
    if (kv && kv[1] === "Rss") cur.rssKb = Number(kv[2]);
    if (line.startsWith("VmFlags:")) cur.flags = line.slice(8).trim().split(/\s+/);
  }
  return out;
}

export const isLockedVma = (m: KernelMapping): boolean => m.flags.includes("lo");

export function vmLckKb(pid: number): number {
  const m = /^VmLck:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

export function memlockLimit(pid: number): { soft: string; hard: string } {
  const m = /^Max locked memory\s+(\S+)\s+(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, "utf8"));
  if (!m) throw new Error("no memlock row");
  return { soft: m[1], hard: m[2] };
}

/** A stable fingerprint of which VMAs are locked, to show that nothing changed. */
export function lockFingerprint(pid: number): string {
  return kernelMappings(pid)
    .map((m) => `${m.start.toString(16)}:${m.flags.includes("lo") ? "L" : "-"}${m.flags.includes("lf") ? "F" : "-"}`)
    .join(" ");
}

/** True while any thread of the process is traced (ptrace is per thread). */
export function isTraced(pid: number): boolean {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return false;
  }
  return tids.some((tid) => {
    try {
      return /^TracerPid:\s+[1-9]/m.test(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8"));
    } catch {
      return false;
    }
  });
}
