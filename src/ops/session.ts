// One ptrace session in the target: the calls run while the target is held (interrupt.ts: a
// run asked to stop waits until the target is let go), what the session cost is added to
// the action report, and a call that failed becomes the error that explains it.
import { errnoName } from "../errors";
import { InjectionResult, runInTarget } from "../inject";
import { holdingTarget } from "../interrupt";
import { BatchReply, SyscallOp } from "../native";
import { Plan } from "../plan";
import { callName, explainCallFailure, withUndoFailure } from "./call-failure";
import { Snapshot } from "./snapshot";
import { ActionReport } from "./types";

export interface ApplyOptions {
  suspendSeccomp?: boolean;
  maxPauseMs?: number;
  keepOnInterrupt?: boolean;
  /** Called once a session has changed the target (interrupt.ts: the run must then report before it ends). */
  changed?: () => void;
}

/** Runs `ops` in the target in one session, holding it throughout. */
export function inTarget(snap: Snapshot, ops: SyscallOp[], opts: ApplyOptions): Promise<InjectionResult> {
  return holdingTarget(() =>
    runInTarget(snap.ref.pid, snap.mappings, ops, {
      startTime: snap.ref.startTime,
      checkSeccomp: snap.status.seccomp === 2,
      suspendSeccomp: opts.suspendSeccomp,
    }),
  );
}

function recordSession(action: ActionReport, reply: BatchReply, thread: { tid: number; reason: string }): void {
  action.thread = { tid: thread.tid, reason: thread.reason };
  const us = Math.round(reply.pauseNs / 1000);
  action.pauseUs = Math.max(action.pauseUs ?? 0, us);
  action.sessions = (action.sessions ?? 0) + 1;
  action.rearmed = (action.rearmed ?? false) || reply.rearmed;
  action.signalsDelivered = (action.signalsDelivered ?? 0) + reply.signalsDelivered;
  action.signalsDeferred = (action.signalsDeferred ?? 0) + reply.signalsDeferred;
}

/**
 * One session of a plan's calls: a call that failed throws the error that explains it (the
 * session undid the calls before it; when that undo failed too, the error says so).
 */
export async function runSession(snap: Snapshot, plan: Plan, ops: SyscallOp[], action: ActionReport, opts: ApplyOptions): Promise<BatchReply> {
  const { reply, thread } = await inTarget(snap, ops, opts);
  recordSession(action, reply, thread);
  const failedAt = reply.results.findIndex((r) => r.errno !== 0);
  if (failedAt >= 0) {
    const err = explainCallFailure(reply.results[failedAt].errno, snap, plan, callName(ops[failedAt].nr));
    const undoFailed = reply.undoResults.filter((r) => r.errno !== 0).length;
    if (undoFailed === 0) throw err;
    throw withUndoFailure(err, `${undoFailed} of the ${reply.undoResults.length} undo call(s) in the target failed (${errnoName(reply.undoResults.find((r) => r.errno !== 0)!.errno)})`, []);
  }
  opts.changed?.();
  return reply;
}
