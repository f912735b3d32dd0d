// Remembers the RLIMIT_MEMLOCK a target had before lockmem raised it, on the host, so
// that any later invocation (another agent run, another operator) can restore it.
import { promises as fs } from "fs";
import * as path from "path";
import { ProcessRef } from "./types";

export interface LimitRecord {
  pid: number;
  startTime: string;
  /** Decimal bytes; "unlimited" never occurs here since nothing raises an unlimited limit. */
  original: { soft: string; hard: string };
  raisedTo: { soft: string; hard: string };
  at: string;
}

/** /run/lockmem by default; LOCKMEM_STATE_DIR moves it (tests). */
export function stateDir(): string {
  return process.env.LOCKMEM_STATE_DIR || "/run/lockmem";
}

function recordPath(ref: Pick<ProcessRef, "pid" | "startTime">): string {
  return path.join(stateDir(), "limits", `${ref.pid}-${ref.startTime}.json`);
}

export async function readLimitRecord(ref: Pick<ProcessRef, "pid" | "startTime">): Promise<LimitRecord | undefined> {
  try {
    return JSON.parse(await fs.readFile(recordPath(ref), "utf8")) as LimitRecord;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Written atomically (temp file, fsync, rename) so a crash never leaves half a record. */
export async function writeLimitRecord(record: LimitRecord): Promise<void> {
  const file = recordPath(record);
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
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
