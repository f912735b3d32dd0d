// Applying a plan: its calls in one ptrace session, or with maxPauseMs in bounded sessions
// the target runs between (issue 13 item 5), undoing what was done when one fails.
import { LockError } from "../errors";
import { formatBytes } from "../format";
import { toLockError } from "../inject";
import { StopReason } from "../interrupt";
import { native, SyscallOp } from "../native";
import { RangeCursor, SessionPacer } from "../pace";
import { ChunkableRange, pauseBoundedSteps, Plan } from "../plan";
import { ALL_UNDONE, LeftLocked, withUndoFailure } from "./call-failure";
import { ApplyOptions, inTarget, runSession } from "./session";
import { Snapshot } from "./snapshot";
import { stopPoint } from "./stop";
import { ActionReport } from "./types";

/** The undo of the calls `done`, newest first, as ranges (munlock can be cut anywhere). */
function undoRanges(done: SyscallOp[]): ChunkableRange[] {
  return done
    .filter((op) => op.undo)
    .reverse()
    .map((op) => ({ nr: op.undo!.nr, start: op.undo!.args[0], end: op.undo!.args[0] + op.undo!.args[1], extraArgs: [] }));
}

/** Undoes `done` in bounded sessions too; what could not be unlocked again, and the first reason. */
async function undoChunks(snap: Snapshot, done: SyscallOp[], pacer: SessionPacer, opts: ApplyOptions): Promise<{ left: LeftLocked[]; firstError?: string }> {
  const cursor = new RangeCursor(undoRanges(done));
  const left: LeftLocked[] = [];
  let firstError: string | undefined;
  while (!cursor.done) {
    const ops = pacer.next(cursor);
    let ran = 0;
    try {
      const { reply } = await inTarget(snap, ops, opts);
      const failedAt = reply.results.findIndex((r) => r.errno !== 0);
      ran = failedAt >= 0 ? failedAt : reply.results.length;
      if (ran < ops.length) firstError ??= failedAt >= 0 ? `munlock returned errno ${reply.results[failedAt].errno}` : "the session ended before every munlock ran";
      pacer.learn(ops.slice(0, reply.results.length), { pauseNs: reply.pauseNs, callNs: reply.results.map((r) => r.ns) });
    } catch (undoErr) {
      firstError ??= undoErr instanceof Error ? undoErr.message : String(undoErr);
    }
    for (const op of ops.slice(ran)) left.push({ start: op.args[0], len: op.args[1] });
  }
  return { left, firstError };
}

function sumBytes(ops: SyscallOp[], nr: number): bigint {
  return ops.filter((op) => op.nr === nr).reduce((a, op) => a + op.args[1], 0n);
}

/**
 * Bounded pauses (issue 13 item 5): the calls are packed into sessions by their measured
 * cost (pace.ts: a fixed part, a part per call, a part per byte), so that each session
 * holds the target for about the budget whatever the mix: many small mappings share one
 * session, a large one is cut into chunks. The target runs between sessions; the result is
 * the same as one big batch. A failure undoes the sessions done so far. A run asked to stop
 * (interrupt.ts) stops between two sessions: a lock is undone unless keepOnInterrupt, an
 * unlock keeps what it unlocked.
 */
async function applyInChunks(snap: Snapshot, plan: Plan, action: ActionReport, opts: ApplyOptions & { maxPauseMs: number }): Promise<void> {
  const nr = native().syscalls;
  const { ranges, finalOps, relock } = pauseBoundedSteps(plan, snap.mappings, nr);
  // 0.8: the budget is the longest hold the target may see; the model is an estimate.
  const pacer = new SessionPacer(opts.maxPauseMs * 1e6 * 0.8);
  const cursor = new RangeCursor(ranges);
  const done: SyscallOp[] = [];
  const pid = snap.ref.pid;
  const sessionsBefore = action.sessions ?? 0;
  try {
    while (!cursor.done) {
      stopPoint(pid);
      const ops = pacer.next(cursor);
      const reply = await runSession(snap, plan, ops, action, opts);
      done.push(...ops);
      pacer.learn(ops, { pauseNs: reply.pauseNs, callNs: reply.results.map((r) => r.ns) });
    }
    if (finalOps.length > 0) {
      stopPoint(pid);
      await runSession(snap, plan, finalOps, action, opts);
    }
    // After munlockall, what must stay locked is locked again: no stop point until it is.
    const again = new RangeCursor(relock);
    while (!again.done) {
      const ops = pacer.next(again);
      const reply = await runSession(snap, plan, ops, action, opts);
      pacer.learn(ops, { pauseNs: reply.pauseNs, callNs: reply.results.map((r) => r.ns) });
    }
  } catch (err) {
    const stopped = err instanceof LockError && err.code === "EINTR";
    const sessionsDone = (action.sessions ?? 0) - sessionsBefore;
    const total = ranges.reduce((a, r) => a + (r.end - r.start), 0n);
    if (stopped && (plan.kind === "unlock" || opts.keepOnInterrupt === true || done.length === 0)) {
      const verb = plan.kind === "lock" ? "locked" : "unlocked";
      const bytes = sumBytes(done, plan.kind === "lock" ? nr.mlock2 : nr.munlock);
      const kept =
        done.length === 0
          ? "before any change: nothing changed"
          : `after ${sessionsDone} session(s): ${formatBytes(bytes)} of ${formatBytes(total)} ${verb}, kept${plan.kind === "lock" ? " (--keep-on-interrupt)" : ""}; run it again to finish`;
      action.interrupted = { reason: err.stage as StopReason, undone: false, sessionsDone };
      throw new LockError({ ...err.toJSON(), message: `${err.message} ${kept}` });
    }
    // Undo, newest first, in bounded sessions too. An undo that fails is reported with the
    // original error (what stays locked, and how to clear it), not dropped.
    const { left, firstError } = await undoChunks(snap, done, pacer, opts);
    if (stopped) {
      action.interrupted = { reason: err.stage as StopReason, undone: left.length === 0, sessionsDone };
      const undone = `after ${sessionsDone} session(s) (${formatBytes(sumBytes(done, nr.mlock2))} of ${formatBytes(total)} locked): undone, ${ALL_UNDONE}`;
      const stoppedErr = new LockError({ ...err.toJSON(), message: `${err.message} ${undone}` });
      if (left.length === 0) throw stoppedErr;
      throw withUndoFailure(stoppedErr, `${left.length} range(s) could not be unlocked again (first: ${firstError})`, left);
    }
    if (left.length === 0) throw err;
    const original = err instanceof LockError ? err : await toLockError(err, pid);
    throw withUndoFailure(original, `${left.length} of ${done.filter((o) => o.undo).length} chunk(s) could not be unlocked again (first: ${firstError})`, left);
  }
}

export async function applyPlan(snap: Snapshot, plan: Plan, action: ActionReport, opts: ApplyOptions = {}): Promise<void> {
  if (plan.ops.length === 0) return;
  if (opts.maxPauseMs !== undefined) return applyInChunks(snap, plan, action, { ...opts, maxPauseMs: opts.maxPauseMs });
  try {
    stopPoint(snap.ref.pid);
  } catch (err) {
    action.interrupted = { reason: (err as LockError).stage as StopReason, undone: false, sessionsDone: 0 };
    throw new LockError({ ...(err as LockError).toJSON(), message: `${(err as LockError).message} before any change: nothing changed` });
  }
  await runSession(snap, plan, plan.ops, action, opts);
}
