// /proc/PID/limits: a fixed-width table; we need one row of it.
import { DEFAULT_PROC_ROOT, procFormatError, readProcFile } from "./read";

/** RLIM_INFINITY on Linux: all 64 bits set. /proc shows it as "unlimited". */
export const RLIM_INFINITY = (1n << 64n) - 1n;

export interface MemlockLimit {
  /** Bytes; RLIM_INFINITY when unlimited. */
  soft: bigint;
  hard: bigint;
}

function limitValue(text: string): bigint {
  if (text === "unlimited") return RLIM_INFINITY;
  if (!/^\d+$/.test(text)) throw procFormatError("limits", `Max locked memory value ${JSON.stringify(text)}`);
  return BigInt(text);
}

/** RLIMIT_MEMLOCK of the process whose limits file this is. */
export function parseMemlockLimit(text: string): MemlockLimit {
  const row = /^Max locked memory\s+(\S+)\s+(\S+)/m.exec(text);
  if (!row) throw procFormatError("limits", "no 'Max locked memory' row");
  return { soft: limitValue(row[1]), hard: limitValue(row[2]) };
}

export async function readMemlockLimit(pid: number, procRoot: string = DEFAULT_PROC_ROOT): Promise<MemlockLimit> {
  return parseMemlockLimit(await readProcFile(pid, "limits", procRoot));
}
