// A call that failed in the target, in words an operator can act on: the errno translated
// (which limit, which capability, what to do next), and when undoing the attempt failed too,
// which ranges may stay locked and how to clear them.
import { ERRNO, errnoName, LockError } from "../errors";
import { formatBytes } from "../format";
import { native } from "../native";
import { Plan } from "../plan";
import { hasCapIpcLock } from "../proc/status";
import { hex, limitReport } from "./report";
import { Snapshot } from "./snapshot";

/** What a failure message says when every call of the attempt was undone. */
export const ALL_UNDONE = "nothing stays locked from this attempt";

export function explainCallFailure(errno: number, snap: Snapshot, plan: Plan, call: string): LockError {
  const pid = snap.ref.pid;
  const undone = ALL_UNDONE;
  switch (errno) {
    case ERRNO.ENOMEM:
      return new LockError({
        code: "ENOMEM",
        pid,
        errno,
        syscall: call,
        message: hasCapIpcLock(snap.status)
          ? `${call} in process ${pid} failed with ENOMEM: the kernel could not lock ${formatBytes(plan.bytes)} (out of memory, or a memory cgroup limit); ${undone}`
          : `${call} in process ${pid} failed with ENOMEM: its RLIMIT_MEMLOCK (${limitReport(snap.limit).soft}) is too low and it lacks CAP_IPC_LOCK; ${undone}`,
        hint: hasCapIpcLock(snap.status) ? "free memory or raise the cgroup's memory.max, or lock fewer mappings" : "pass --raise-limit, raise LimitMEMLOCK=, or grant CAP_IPC_LOCK",
      });
    case ERRNO.EPERM:
      return new LockError({
        code: "EPERM",
        pid,
        errno,
        syscall: call,
        message: `${call} in process ${pid} failed with EPERM: it lacks CAP_IPC_LOCK and its RLIMIT_MEMLOCK is 0; ${undone}`,
        hint: "pass --raise-limit, raise LimitMEMLOCK=, or grant CAP_IPC_LOCK",
      });
    case ERRNO.EAGAIN:
      return new LockError({
        code: "EAGAIN",
        pid,
        errno,
        syscall: call,
        message: `${call} in process ${pid} failed with EAGAIN: some pages could not be locked; ${undone}`,
        hint: "retry; if it persists, check memory pressure and the memory cgroup",
      });
    default:
      return new LockError({ code: "EINTERNAL", pid, errno, syscall: call, message: `${call} in process ${pid} failed with ${errnoName(errno)}; ${undone}` });
  }
}

export function callName(nr: number): string {
  const n = native().syscalls;
  return nr === n.mlock2 ? "mlock2" : nr === n.munlock ? "munlock" : nr === n.mlockall ? "mlockall" : nr === n.munlockall ? "munlockall" : `syscall ${nr}`;
}

/** A range a failed attempt could not undo. */
export interface LeftLocked {
  start: bigint;
  len: bigint;
}

/**
 * The failure `err`, saying that undoing the attempt failed too (instead of "nothing stays
 * locked"), which ranges may stay locked and how to clear them: the undo error is a warning
 * the operator must see, never dropped in favour of the original error alone.
 */
export function withUndoFailure(err: LockError, why: string, left: LeftLocked[]): LockError {
  const pid = err.pid;
  const bytes = left.reduce((a, r) => a + r.len, 0n);
  // Chunks of one range are adjacent: show the ranges, not every chunk.
  left = [...left].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0)).reduce<LeftLocked[]>((out, r) => {
    const last = out[out.length - 1];
    if (last && last.start + last.len === r.start) last.len += r.len;
    else out.push({ ...r });
    return out;
  }, []);
  const ranges = left.length === 0 ? "" : `: ${formatBytes(bytes)} in ${left.length} range(s) may stay locked (${left.slice(0, 4).map((r) => `${hex(r.start)}-${hex(r.start + r.len)}`).join(", ")}${left.length > 4 ? ", ..." : ""})`;
  const warning = `warning: undoing this attempt failed too: ${why}${ranges}`;
  const message = err.message.includes(ALL_UNDONE) ? err.message.replace(ALL_UNDONE, warning) : `${err.message}; ${warning}`;
  const fix = `check with \`lockmem status --pid ${pid}\` and unlock what stays locked with \`lockmem unlock --pid ${pid}\``;
  return new LockError({ ...err.toJSON(), message, hint: err.hint ? `${err.hint}; ${fix}` : fix });
}
