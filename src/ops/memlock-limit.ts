// RLIMIT_MEMLOCK policy: the limit a lock needs, raising it for the target (prlimit on the
// target pid; the limit is the target's, not lockmem's), and putting it back on unlock. What
// was raised is recorded (limitStore.ts) so that a later unlock restores the limit from
// before the first raise.
import { LockError } from "../errors";
import { formatBytes } from "../format";
import { readLimitRecord, removeLimitRecord, writeLimitRecord } from "../limitStore";
import { native } from "../native";
import { Plan } from "../plan";
import { MemlockLimit } from "../proc/limits";
import { readStatus } from "../proc/status";
import { ProcessRef } from "../types";
import { limitReport } from "./report";
import { Snapshot } from "./snapshot";
import { ActionReport } from "./types";

/** prlimit on another process; EPERM explained (uids differ and no CAP_SYS_RESOURCE). */
function setLimit(ref: ProcessRef, limit: MemlockLimit): MemlockLimit {
  try {
    return native().setMemlockLimit(ref.pid, limit);
  } catch (err) {
    if ((err as { code?: string }).code === "EPERM") {
      throw new LockError({
        code: "EPERM",
        pid: ref.pid,
        syscall: "prlimit",
        message: `lockmem may not change RLIMIT_MEMLOCK of process ${ref.pid}: it runs as another user and lockmem lacks CAP_SYS_RESOURCE`,
        hint: "run lockmem with CAP_SYS_RESOURCE (a normal root has it), or raise LimitMEMLOCK= in the target's unit",
      });
    }
    throw err;
  }
}

async function haveCapSysResource(): Promise<boolean> {
  const own = await readStatus(process.pid);
  return ((own.capEff >> 24n) & 1n) === 1n;
}

const PAGE = 4096n;

/** The limit the target must get, or undefined when its current one suffices. */
export async function limitNeeded(snap: Snapshot, plan: Plan, raise: boolean): Promise<MemlockLimit | undefined> {
  const pid = snap.ref.pid;
  if (plan.neededLimit === 0n || plan.neededLimit <= snap.limit.soft) return undefined;
  const need = ((plan.neededLimit + PAGE - 1n) / PAGE) * PAGE;
  const what = plan.whole ? "mlockall(MCL_CURRENT) counts its whole virtual size" : "it needs its already locked memory plus the selection";
  if (!raise) {
    throw new LockError({
      code: "ENOMEM",
      pid,
      syscall: plan.whole ? "mlockall" : "mlock2",
      message: `process ${pid} (${snap.ref.comm}) lacks CAP_IPC_LOCK and its RLIMIT_MEMLOCK (${formatBytes(snap.limit.soft)}) is below the ${formatBytes(need)} this lock needs (${what})`,
      hint: "pass --raise-limit (raiseMemlockLimit: true) to raise it for this process, raise LimitMEMLOCK= in its unit, or grant it CAP_IPC_LOCK",
    });
  }
  if (need <= snap.limit.hard) return { soft: need, hard: snap.limit.hard };
  if (await haveCapSysResource()) return { soft: need, hard: need };
  throw new LockError({
    code: "EPERM",
    pid,
    syscall: "prlimit",
    message: `process ${pid} needs RLIMIT_MEMLOCK ${formatBytes(need)} but its hard limit is ${formatBytes(snap.limit.hard)}, and raising a hard limit needs CAP_SYS_RESOURCE, which lockmem does not hold`,
    hint: "run lockmem with CAP_SYS_RESOURCE, raise LimitMEMLOCK= in the target's unit, or lock fewer mappings",
  });
}

/**
 * Raises the target's limit to `newLimit` and records it. Returns the limit to put back if
 * the lock then fails, or undefined when an earlier raise owns the record.
 */
export async function raiseLimit(ref: ProcessRef, newLimit: MemlockLimit, action: ActionReport, warnings: string[], changed: () => void): Promise<MemlockLimit | undefined> {
  const prior = await readLimitRecord(ref, warnings);
  const previous = setLimit(ref, newLimit);
  changed();
  await writeLimitRecord({
    pid: ref.pid,
    startTime: ref.startTime,
    // Across several raises, the limit to restore is the one before the first.
    original: prior ? prior.original : { soft: previous.soft.toString(), hard: previous.hard.toString() },
    raisedTo: { soft: newLimit.soft.toString(), hard: newLimit.hard.toString() },
    at: new Date().toISOString(),
  });
  action.limitRaised = { from: limitReport(previous), to: limitReport(newLimit) };
  return prior ? undefined : previous; // an earlier raise owns the record
}

/** A lock that failed puts back the limit it raised (`raisedNow` from raiseLimit). */
export async function undoRaise(ref: ProcessRef, raisedNow: MemlockLimit, action: ActionReport): Promise<void> {
  setLimit(ref, raisedNow);
  await removeLimitRecord(ref);
  action.limitRestored = { from: action.limitRaised!.to, to: limitReport(raisedNow) };
}

/** After an unlock: the limit from before the first raise, or as high as what stays locked needs. */
export async function restoreLimit(ref: ProcessRef, after: Snapshot, action: ActionReport, warnings: string[]): Promise<void> {
  const record = await readLimitRecord(ref, warnings);
  if (!record) return;
  const raised = { soft: BigInt(record.raisedTo.soft), hard: BigInt(record.raisedTo.hard) };
  if (after.limit.soft !== raised.soft || after.limit.hard !== raised.hard) {
    warnings.push(`RLIMIT_MEMLOCK of process ${ref.pid} was changed by someone else since lockmem raised it; left as it is`);
    await removeLimitRecord(ref);
    return;
  }
  const original = { soft: BigInt(record.original.soft), hard: BigInt(record.original.hard) };
  const stillLocked = BigInt(after.status.vmLck);
  if (stillLocked > original.soft) {
    // Memory stays locked: keep the limit just high enough for it.
    const keep = { soft: stillLocked, hard: raised.hard };
    if (keep.soft < raised.soft) {
      setLimit(ref, keep);
      await writeLimitRecord({ ...record, raisedTo: { soft: keep.soft.toString(), hard: keep.hard.toString() }, at: new Date().toISOString() });
      action.limitRestored = { from: limitReport(raised), to: limitReport(keep) };
    }
    return;
  }
  setLimit(ref, original);
  await removeLimitRecord(ref);
  action.limitRestored = { from: limitReport(raised), to: limitReport(original) };
}
