// Running an operation over the processes a target spec resolves to: the request is
// validated, each process is handled on its own (one failing does not stop the others), and
// each ends with an outcome. lock and unlock change each process under its target lock.
import * as os from "os";
import { LockError } from "../errors";
import { toLockError } from "../inject";
import { changingTarget, stopRequested } from "../interrupt";
import { recoverInterrupted } from "../journal";
import { validateSelection } from "../select";
import { DEFAULT_TARGET_WAIT_MS, withTargetLocks } from "../target-lock";
import { resolveTarget, validateTargetSpec } from "../target";
import { SELECTOR_LIST } from "../target-selectors";
import { ProcessRef, SelectionSpec, TargetSpec } from "../types";
import { processReport } from "./report";
import { snapshot } from "./snapshot";
import { stopText } from "./stop";
import { ActionReport, HostReport, Outcome, ProcessResult } from "./types";

function validateRequest(req: { target: TargetSpec; mappings?: SelectionSpec }): void {
  if (!req || typeof req !== "object" || !req.target || typeof req.target !== "object") {
    throw new LockError({ code: "EUSAGE", field: "target", message: `target: required (one of ${SELECTOR_LIST})` });
  }
  const targetProblem = validateTargetSpec(req.target);
  if (targetProblem) throw targetProblem;
  if (req.mappings !== undefined) {
    const selectionProblem = validateSelection(req.mappings);
    if (selectionProblem) throw selectionProblem;
  }
}

export async function resolve(req: { target: TargetSpec; mappings?: SelectionSpec }): Promise<ProcessRef[]> {
  validateRequest(req);
  return resolveTarget(req.target);
}

/**
 * One failing process: throw its error; several: report each. A run asked to stop starts no
 * further process (`failed` gets an EINTR error for each).
 */
export async function perProcess<P>(refs: ProcessRef[], work: (ref: ProcessRef) => Promise<P>, failed: (ref: ProcessRef, err: LockError) => P): Promise<P[]> {
  if (refs.length === 1) {
    try {
      return [await work(refs[0])];
    } catch (err) {
      throw await toLockError(err, refs[0].pid);
    }
  }
  const out: P[] = [];
  for (const ref of refs) {
    const stop = stopRequested();
    if (stop) {
      out.push(failed(ref, new LockError({ code: "EINTR", pid: ref.pid, stage: stop, message: `not started: the run was stopped by ${stopText(stop)} before it reached process ${ref.pid}` })));
      continue;
    }
    try {
      out.push(await work(ref));
    } catch (err) {
      out.push(failed(ref, await toLockError(err, ref.pid)));
    }
  }
  return out;
}

/** The outcome of a process that threw `err` while others were handled too. */
function outcomeOf(err: LockError): Outcome {
  // ESRCH: it exited (or became a zombie) during the run; a gone process is not a failure to
  // lock the others (issue 15: one PostgreSQL backend ending failed a whole --all-matches run).
  if (err.code === "ESRCH") return "gone";
  if (err.code === "EINTR") return "skipped";
  return "failed";
}

function summaryOf(processes: ProcessResult[]): Record<Outcome, number> {
  const summary: Record<Outcome, number> = { done: 0, gone: 0, failed: 0, interrupted: 0, skipped: 0 };
  for (const p of processes) summary[p.outcome]++;
  return summary;
}

export function failedResult(ref: ProcessRef, err: LockError): ProcessResult {
  return {
    outcome: outcomeOf(err),
    pid: ref.pid,
    startTime: ref.startTime,
    comm: ref.comm,
    cmdline: ref.cmdline,
    state: "?",
    capIpcLock: false,
    seccomp: 0,
    memlockLimit: { soft: "?", hard: "?" },
    vmSize: 0,
    vmLck: 0,
    vmRss: 0,
    totals: { size: 0, rss: 0, anonymous: 0, locked: 0 },
    mappings: [],
    warnings: [],
    error: err.toJSON(),
  };
}

/**
 * A run stopped early (EINTR from applyPlan): the report of what the kernel shows now, with
 * the reason; never a bare error, since what stays locked is what the operator must know.
 */
export async function interruptedResult(ref: ProcessRef, spec: SelectionSpec, action: ActionReport, warnings: string[], err: LockError): Promise<ProcessResult> {
  const after = await snapshot(ref);
  return { ...processReport(after, spec), outcome: "interrupted", action, warnings, error: err.toJSON() };
}

/** Runs a change of one process under its target lock (one lockmem per target, src/target-lock.ts). */
function serialised<T>(ref: ProcessRef, op: string, fn: () => Promise<T>): Promise<T> {
  return withTargetLocks([ref.pid], { op, waitMs: DEFAULT_TARGET_WAIT_MS }, fn);
}

/** Finishes an injection an earlier lockmem run left half done (it died). */
export async function recoverFirst(ref: ProcessRef, warnings: string[]): Promise<void> {
  for (const r of await recoverInterrupted(ref.pid)) {
    warnings.push(`recovered an interrupted lockmem run on process ${r.pid}: ${r.detail}`);
  }
}

/**
 * lock and unlock over the resolved processes: each changed under its target lock (a dry run
 * takes none and changes nothing), the run reporting before it ends once any process was
 * changed (interrupt.ts).
 */
export async function changeEach(
  refs: ProcessRef[],
  op: "lock" | "unlock",
  dryRun: boolean | undefined,
  one: (ref: ProcessRef, changed: () => void) => Promise<ProcessResult>,
): Promise<HostReport<ProcessResult>> {
  const processes = await changingTarget((changed) => perProcess(refs, (ref) => (dryRun ? one(ref, changed) : serialised(ref, op, () => one(ref, changed))), failedResult));
  return { host: os.hostname(), ...(dryRun ? { dryRun: true } : {}), processes, summary: summaryOf(processes) };
}
