// /proc/PID/stat: "pid (comm) state ppid ...". comm is at most 15 bytes but may contain
// spaces and parentheses, e.g. "a) (b", so the only safe split is at the LAST ')'.
import { DEFAULT_PROC_ROOT, procFormatError, readProcFile } from "./read";

export interface ProcessStat {
  pid: number;
  comm: string;
  /** One letter, e.g. "S", "R", "T", "Z". */
  state: string;
  ppid: number;
  /** Field 9, PF_* bits; PF_KTHREAD marks kernel threads. */
  flags: number;
  /** Field 22, clock ticks after boot, as a decimal string (it is a u64). */
  startTime: string;
}

/** include/linux/sched.h */
export const PF_KTHREAD = 0x00200000;

export function parseStat(text: string): ProcessStat {
  const open = text.indexOf(" (");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) throw procFormatError("stat", `no "(comm)" in ${JSON.stringify(text.slice(0, 80))}`);
  const pid = Number(text.slice(0, open));
  // After ") " come fields 3, 4, ...: rest[0] is field 3.
  const rest = text.slice(close + 2).trim().split(" ");
  const field = (n: number): string => {
    const value = rest[n - 3];
    if (value === undefined) throw procFormatError("stat", `field ${n} missing`);
    return value;
  };
  const startTime = field(22);
  if (!Number.isSafeInteger(pid) || !/^\d+$/.test(startTime)) {
    throw procFormatError("stat", `bad pid or start time in ${JSON.stringify(text.slice(0, 80))}`);
  }
  return {
    pid,
    comm: text.slice(open + 2, close),
    state: field(3),
    ppid: Number(field(4)),
    flags: Number(field(9)),
    startTime,
  };
}

export function isKernelThread(stat: Pick<ProcessStat, "pid" | "ppid" | "flags">): boolean {
  // kthreadd is pid 2 and the parent of every other kernel thread; PF_KTHREAD says it directly.
  return stat.pid === 2 || stat.ppid === 2 || (stat.flags & PF_KTHREAD) !== 0;
}

export async function readStat(pid: number, procRoot: string = DEFAULT_PROC_ROOT): Promise<ProcessStat> {
  return parseStat(await readProcFile(pid, "stat", procRoot));
}
