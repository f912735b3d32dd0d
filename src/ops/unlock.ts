// unlock: per process, undo what the last lock set (or the selection given), put back the
// RLIMIT_MEMLOCK a lock raised, and say precisely what stays locked and how to clear it.
import { formatBytes } from "../format";
import { holdingTarget } from "../interrupt";
import { readLockRecord, removeLockRecord } from "../lockRecord";
import { native } from "../native";
import { planUnlock } from "../plan";
import { effectiveSelection, isLocked, selectMappings } from "../select";
import { ProcessRef, SelectionSpec } from "../types";
import { applyPlan } from "./apply";
import { restoreLimit } from "./memlock-limit";
import { changeEach, interruptedResult, recoverFirst, resolve } from "./per-process";
import { actionReport, hex, processReport } from "./report";
import { refuseUnsafeTarget } from "./safety";
import { facts, Snapshot, snapshot } from "./snapshot";
import { isStop } from "./stop";
import { HostReport, ProcessResult, UnlockRequest } from "./types";

export async function unlock(req: UnlockRequest): Promise<HostReport<ProcessResult>> {
  const refs = await resolve(req);
  return changeEach(refs, "unlock", req.dryRun, (ref, changed) => unlockOne(req, ref, changed));
}

async function unlockOne(request: UnlockRequest, ref: ProcessRef, changed: () => void): Promise<ProcessResult> {
  const warnings: string[] = [...(ref.warnings ?? [])];
  const req = await unlockRequestFor(request, ref, warnings);
  const spec = effectiveSelection(req.mappings);
  if (!req.dryRun) await holdingTarget(() => recoverFirst(ref, warnings));
  const snap = await snapshot(ref);
  const plan = planUnlock(facts(snap), spec, { future: req.future }, native().syscalls);
  const action = actionReport(plan);
  if (req.dryRun) return { ...processReport(snap, spec), outcome: "done", action, warnings };
  if (plan.ops.length > 0) {
    refuseUnsafeTarget(snap);
    try {
      await applyPlan(snap, plan, action, { suspendSeccomp: req.allowSeccompSuspend, maxPauseMs: req.maxPauseMs, changed });
    } catch (err) {
      if (isStop(err)) return interruptedResult(ref, spec, action, warnings, err);
      throw err;
    }
    // munlockall clears MCL_FUTURE: what the last lock set is undone.
    if (plan.ops.some((op) => op.nr === native().syscalls.munlockall)) await removeLockRecord(ref);
  }
  const after = await snapshot(ref);
  await restoreLimit(ref, after, action, warnings);
  const final = action.limitRestored ? await snapshot(ref) : after;
  const report = processReport(final, spec);
  if (report.selection && report.selection.lockedMappings > 0) {
    warnings.push(`${report.selection.lockedMappings} selected mapping(s) are still locked`);
  }
  await whatStays(ref, final, spec, warnings);
  return { ...report, outcome: "done", action, warnings };
}

/**
 * A plain unlock (no selection, no --future) undoes what the last lock set: after `lock --all`
 * it is `unlock --all` (munlockall, which also clears MCL_FUTURE), after `lock --future` the
 * same selection with --future. Issue 15: it used to unlock the default selection only and
 * leave MCL_FUTURE and everything else locked, silently.
 */
async function unlockRequestFor(req: UnlockRequest, ref: ProcessRef, warnings: string[]): Promise<UnlockRequest> {
  if (req.mappings !== undefined || req.future !== undefined) return req;
  const record = await readLockRecord(ref);
  if (!record) return req;
  const what = record.mappings.all ? "--all" : "its selection";
  warnings.push(`undoing the last lock of process ${ref.pid} (${record.at}: ${what}${record.future ? " with --future" : ""}): ${record.mappings.all || record.future ? "munlockall clears MCL_FUTURE too" : ""}`.replace(/: $/, ""));
  return { ...req, mappings: record.mappings, future: record.future || undefined };
}

/** After an unlock: precisely what stays locked, and how to clear it. */
async function whatStays(ref: ProcessRef, after: Snapshot, spec: SelectionSpec, warnings: string[]): Promise<void> {
  const selected = new Set(selectMappings(after.mappings, spec).selected);
  const outside = after.mappings.filter((m) => isLocked(m) && !selected.has(m));
  const record = await readLockRecord(ref);
  if (outside.length === 0 && !record?.future) return;
  const parts: string[] = [];
  if (outside.length > 0) {
    const bytes = outside.reduce((a, m) => a + m.size, 0);
    const reserved = outside.filter((m) => m.perms.startsWith("---")).length;
    parts.push(
      `VmLck ${formatBytes(after.status.vmLck)} stays locked: ${outside.length} mapping(s) outside this selection (${formatBytes(bytes)}` +
        `${reserved > 0 ? `, ${reserved} of them PROT_NONE reservations marked locked by mlockall` : ""}; first: ${outside.slice(0, 3).map((m) => `${hex(m.start)} ${m.path || "[ anon ]"}`).join(", ")})`,
    );
  }
  if (record?.future) parts.push(`MCL_FUTURE stays set (lock --future of ${record.at}): new mappings keep being locked`);
  warnings.push(`${parts.join("; ")}; \`lockmem unlock --pid ${ref.pid} --all\` unlocks everything and clears MCL_FUTURE`);
}
