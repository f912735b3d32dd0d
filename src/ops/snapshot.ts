// Snapshots of a process: what /proc shows of it at one moment (status, mappings, limit),
// read so that a process that exits or is replaced meanwhile is reported as gone (ESRCH).
import { LockError } from "../errors";
import { TargetFacts } from "../plan";
import { MemlockLimit, readMemlockLimit } from "../proc/limits";
import { readMappings } from "../proc/smaps";
import { hasCapIpcLock, ProcessStatus, readStatus } from "../proc/status";
import { readProcessRef, sameProcess } from "../target";
import { Mapping, ProcessRef } from "../types";

export interface Snapshot {
  ref: ProcessRef;
  status: ProcessStatus;
  mappings: Mapping[];
  limit: MemlockLimit;
}

export async function snapshot(ref: ProcessRef): Promise<Snapshot> {
  try {
    const [status, mappings, limit] = await Promise.all([readStatus(ref.pid), readMappings(ref.pid), readMemlockLimit(ref.pid)]);
    const now = await readProcessRef(ref.pid);
    // A zombie keeps its pid and start time but has no memory left.
    if (!sameProcess(now, ref) || status.state === "Z" || status.state === "X" || mappings.length === 0) throw new Error("gone");
    return { ref, status, mappings, limit };
  } catch (err) {
    if (err instanceof LockError && err.code !== "ENOTARGET" && err.code !== "ESRCH") throw err;
    throw new LockError({
      code: "ESRCH",
      pid: ref.pid,
      message: `process ${ref.pid} (${ref.comm}) exited or was replaced while lockmem read it`,
      hint: "run again: the target spec is resolved afresh",
    });
  }
}

/** What planning needs to know of the process. */
export function facts(snap: Snapshot): TargetFacts {
  return { mappings: snap.mappings, vmLck: snap.status.vmLck, vmSize: snap.status.vmSize, capIpcLock: hasCapIpcLock(snap.status) };
}
