// Remembers the RLIMIT_MEMLOCK a target had before lockmem raised it, on the host, so
// that any later invocation (another agent run, another operator) can restore it.
// A record decides which limit a process gets: it is read only from a state dir that
// passed secureStateDir(), and only if every field is what lockmem would have written
// for that very process (a forged record once set an untouched process's limit to 0).
import { promises as fs } from "fs";
import * as path from "path";
import { isDecimalName, readStateRecord, secureStateDir } from "./state-dir";
import { ProcessRef } from "./types";

export interface LimitRecord {
  pid: number;
  startTime: string;
  /** Decimal bytes; "unlimited" never occurs here since nothing raises an unlimited limit. */
  original: { soft: string; hard: string };
  raisedTo: { soft: string; hard: string };
  at: string;
}

export { stateDir } from "./state-dir";

function recordPath(ref: Pick<ProcessRef, "pid" | "startTime">): string {
  if (!Number.isSafeInteger(ref.pid) || ref.pid <= 0 || !isDecimalName(ref.startTime)) {
    throw new Error(`invalid process identity ${JSON.stringify(ref)} for a limit record`);
  }
  return path.join(secureStateDir("limits"), `${ref.pid}-${ref.startTime}.json`);
}

const U64_MAX = (1n << 64n) - 1n;

function decimal(v: unknown): bigint | undefined {
  return typeof v === "string" && /^[0-9]{1,20}$/.test(v) && BigInt(v) <= U64_MAX ? BigInt(v) : undefined;
}

/** The record, if it is one lockmem wrote for exactly this process; why not, otherwise. */
export function validateLimitRecord(raw: unknown, ref: Pick<ProcessRef, "pid" | "startTime">): LimitRecord | string {
  if (typeof raw !== "object" || raw === null) return "not an object";
  const r = raw as Partial<LimitRecord>;
  if (r.pid !== ref.pid || r.startTime !== ref.startTime) return "it names another process";
  const pair = (p: unknown): { soft: bigint; hard: bigint } | undefined => {
    if (typeof p !== "object" || p === null) return undefined;
    const soft = decimal((p as { soft?: unknown }).soft);
    const hard = decimal((p as { hard?: unknown }).hard);
    return soft !== undefined && hard !== undefined && soft <= hard ? { soft, hard } : undefined;
  };
  const original = pair(r.original);
  const raised = pair(r.raisedTo);
  if (!original || !raised) return "its limits are not pairs of decimal byte counts with soft <= hard";
  // lockmem only ever raises a limit: a record that would lower it is not ours.
  if (original.soft > raised.soft || original.hard > raised.hard) return "it would lower the limit, which lockmem never raised from";
  if (typeof r.at !== "string") return "no time";
  return r as LimitRecord;
}

/** The record of this process, if any; an invalid one is set aside and reported in `warnings`. */
export async function readLimitRecord(ref: Pick<ProcessRef, "pid" | "startTime">, warnings: string[] = []): Promise<LimitRecord | undefined> {
  const file = recordPath(ref);
  const { record, rejected } = await readStateRecord(file, (raw) => validateLimitRecord(raw, ref));
  if (rejected) {
    warnings.push(`the limit record ${file} is not one lockmem wrote for process ${ref.pid} (${rejected}): set aside as ${path.basename(file)}.invalid, not used; RLIMIT_MEMLOCK left as it is`);
  }
  return record;
}

/** Written atomically (temp file, fsync, rename) so a crash never leaves half a record. */
export async function writeLimitRecord(record: LimitRecord): Promise<void> {
  const file = recordPath(record);
  const tmp = `${file}.${process.pid}.tmp`;
  const handle = await fs.open(tmp, "w", 0o600);
  try {
    await handle.writeFile(JSON.stringify(record, null, 2) + "\n");
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
}

export async function removeLimitRecord(ref: Pick<ProcessRef, "pid" | "startTime">): Promise<void> {
  await fs.rm(recordPath(ref), { force: true });
}
