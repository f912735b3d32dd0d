// lock (and plan, its dry run): per process, recover a run that died, snapshot, refuse what is
// unsafe, plan, check limits (raising RLIMIT_MEMLOCK only when asked), apply in one ptrace
// session or bounded ones, then snapshot again to verify.
import { formatBytes } from "../format";
import { holdingTarget } from "../interrupt";
import { writeLockRecord } from "../lockRecord";
import { native } from "../native";
import { Plan, planLock } from "../plan";
import { MemlockLimit } from "../proc/limits";
import { ProcessRef, SelectionSpec } from "../types";
import { applyPlan } from "./apply";
import { limitNeeded, raiseLimit, undoRaise } from "./memlock-limit";
import { changeEach, interruptedResult, recoverFirst, resolve } from "./per-process";
import { effectiveSelection } from "../select";
import { actionReport, limitReport, processReport } from "./report";
import { refuseCgroupOverflow, refuseUnsafeTarget } from "./safety";
import { facts, snapshot } from "./snapshot";
import { isStop, stopPoint } from "./stop";
import { ActionReport, HostReport, LockRequest, ProcessResult } from "./types";

/** A dry run of lock: what would change, how many bytes, what limit it needs. */
export async function plan(req: LockRequest): Promise<HostReport<ProcessResult>> {
  return lock({ ...req, dryRun: true });
}

export async function lock(req: LockRequest): Promise<HostReport<ProcessResult>> {
  const refs = await resolve(req);
  return changeEach(refs, "lock", req.dryRun, (ref, changed) => lockOne(req, ref, changed));
}

async function lockOne(req: LockRequest, ref: ProcessRef, changed: () => void): Promise<ProcessResult> {
  const spec = effectiveSelection(req.mappings);
  const early: string[] = [];
  if (!req.dryRun) await holdingTarget(() => recoverFirst(ref, early));
  const snap = await snapshot(ref);
  refuseUnsafeTarget(snap);
  const plan = planLock(facts(snap), spec, { future: req.future, onFault: req.onFault }, native().syscalls);
  const action = actionReport(plan);
  const warnings: string[] = [...(ref.warnings ?? []), ...early];
  const reserved = reservedWarning(plan, req.dryRun === true);
  if (reserved) warnings.push(reserved);
  const newLimit = await limitNeeded(snap, plan, req.raiseMemlockLimit === true);
  await refuseCgroupOverflow(ref, plan);
  if (req.dryRun) {
    if (newLimit) action.limitRaised = { from: limitReport(snap.limit), to: limitReport(newLimit) };
    return { ...processReport(snap, spec), outcome: "done", action, warnings };
  }
  let raisedNow: MemlockLimit | undefined;
  if (newLimit) {
    stopPoint(ref.pid);
    raisedNow = await raiseLimit(ref, newLimit, action, warnings, changed);
  }
  try {
    await applyPlan(snap, plan, action, { suspendSeccomp: req.allowSeccompSuspend, maxPauseMs: req.maxPauseMs, keepOnInterrupt: req.keepOnInterrupt, changed });
  } catch (err) {
    // Every failure path leaves the target as it was, its limit included (a stopped lock
    // that keeps its chunks keeps the limit they need).
    const keptSome = isStop(err) && action.interrupted?.undone === false && action.interrupted.sessionsDone > 0;
    if (raisedNow && !keptSome) await undoRaise(ref, raisedNow, action);
    if (isStop(err)) return interruptedResult(ref, spec, action, warnings, err);
    throw err;
  }
  return verifyLocked(req, ref, spec, action, warnings);
}

/** After the calls: what a plain unlock must undo is recorded, and the kernel's view is checked. */
async function verifyLocked(req: LockRequest, ref: ProcessRef, spec: SelectionSpec, action: ActionReport, warnings: string[]): Promise<ProcessResult> {
  if (spec.all === true || req.future === true) {
    // What a plain `unlock` must undo: only munlockall clears these (issue 15).
    await writeLockRecord({ pid: ref.pid, startTime: ref.startTime, mappings: spec, future: req.future === true, onFault: req.onFault === true, at: new Date().toISOString() });
  }
  const after = await snapshot(ref);
  const report = processReport(after, spec);
  if (report.selection && !report.selection.inSync) {
    warnings.push(`${report.selection.unlocked.length} selected mapping(s) are not locked after the call: ${report.selection.unlocked.join(", ")}`);
  }
  return { ...report, outcome: "done", action, warnings };
}

/** What `--all` does beyond the accessible mappings (issue 15), as a warning everyone sees. */
function reservedWarning(plan: Plan, dryRun: boolean): string | undefined {
  if (plan.reserved.length === 0) return undefined;
  const bytes = plan.reserved.reduce((a, m) => a + m.size, 0);
  return (
    `mlockall(MCL_CURRENT) ${dryRun ? "would also mark" : "also marked"} ${plan.reserved.length} PROT_NONE reservation(s), ${formatBytes(bytes)}, locked ` +
    `(VmLck ${dryRun ? "would count" : "counts"} them: ${formatBytes(plan.vmLckAfter)} in all): memory the process makes accessible there later ` +
    `(mprotect, as JVM and Go heaps grow) becomes resident and locked at once, as with --future; ` +
    `--all-accessible (mappings: { allAccessible: true }) locks every accessible mapping and leaves the reservations alone`
  );
}
