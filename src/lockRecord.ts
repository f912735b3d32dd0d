// What the last `lock` of a process set (its selection and --future), kept on the host so
// that a plain `unlock` (no selection) undoes exactly that, from any later invocation.
// Issue 15: `unlock` after `lock --all --future` unlocked only the default r-x,rwx selection
// and left MCL_FUTURE and everything else locked, silently. mm->def_flags (MCL_FUTURE) is not
// visible in /proc, so without this record nobody can tell that it is set.
import { promises as fs } from "fs";
import * as path from "path";
import { stateDir } from "./limitStore";
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
  return path.join(stateDir(), "locks", `${ref.pid}-${ref.startTime}.json`);
}

export async function readLockRecord(ref: Pick<ProcessRef, "pid" | "startTime">): Promise<LockRecord | undefined> {
  try {
    return JSON.parse(await fs.readFile(recordPath(ref), "utf8")) as LockRecord;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Written to a temporary name and renamed: a reader never sees half a record. */
export async function writeLockRecord(record: LockRecord): Promise<void> {
  const file = recordPath(record);
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(record, null, 2) + "\n", { mode: 0o600 });
  await fs.rename(tmp, file);
}

export async function removeLockRecord(ref: Pick<ProcessRef, "pid" | "startTime">): Promise<void> {
  await fs.rm(recordPath(ref), { force: true });
}
