// What the last `lock` of a process set (its selection and --future), kept on the host so
// that a plain `unlock` (no selection) undoes exactly that, from any later invocation.
// Issue 15: `unlock` after `lock --all --future` unlocked only the default r-x,rwx selection
// and left MCL_FUTURE and everything else locked, silently. mm->def_flags (MCL_FUTURE) is not
// visible in /proc, so without this record nobody can tell that it is set.
//
// Like everything read back from the state dir (src/state-dir.ts), a record is used only if
// it is what lockmem writes for exactly this process; anything else is set aside.
import { promises as fs } from "fs";
import * as path from "path";
import { validateSelection } from "./select";
import { isDecimalName, readStateRecord, secureStateDir } from "./state-dir";
import { ProcessRef, SelectionSpec } from "./types";

export interface LockRecord {
  pid: number;
  startTime: string;
  mappings: SelectionSpec;
  future: boolean;
  onFault: boolean;
  at: string;
}

function recordPath(ref: Pick<ProcessRef, "pid" | "startTime">): string {
  if (!Number.isSafeInteger(ref.pid) || ref.pid <= 0 || !isDecimalName(ref.startTime)) {
    throw new Error(`invalid process identity ${JSON.stringify(ref)} for a lock record`);
  }
  return path.join(secureStateDir("last-lock"), `${ref.pid}-${ref.startTime}.json`);
}

function isLockRecord(raw: unknown, ref: Pick<ProcessRef, "pid" | "startTime">): raw is LockRecord {
  if (typeof raw !== "object" || raw === null) return false;
  const r = raw as Partial<LockRecord>;
  return (
    r.pid === ref.pid &&
    r.startTime === ref.startTime &&
    typeof r.future === "boolean" &&
    typeof r.onFault === "boolean" &&
    typeof r.at === "string" &&
    typeof r.mappings === "object" &&
    r.mappings !== null &&
    validateSelection(r.mappings) === undefined
  );
}

export async function readLockRecord(ref: Pick<ProcessRef, "pid" | "startTime">): Promise<LockRecord | undefined> {
  return (await readStateRecord(recordPath(ref), (raw) => (isLockRecord(raw, ref) ? raw : "not a lock record of this process"))).record;
}

/** Written to a temporary name and renamed: a reader never sees half a record. */
export async function writeLockRecord(record: LockRecord): Promise<void> {
  const file = recordPath(record);
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(record, null, 2) + "\n", { mode: 0o600 });
  await fs.rename(tmp, file);
}

export async function removeLockRecord(ref: Pick<ProcessRef, "pid" | "startTime">): Promise<void> {
  await fs.rm(recordPath(ref), { force: true });
}
