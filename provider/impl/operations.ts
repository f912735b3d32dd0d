// create / read / update / delete of LockedProcessMemory against the agent.
import * as crypto from "crypto";
import { HostReport, LockRequest, ProcessReport, ProcessResult, UnlockRequest } from "../../src/api";
import { LockError } from "../../src/errors";
import { SelectionSpec } from "../../src/types";
import { DeployError } from "../agent/deploy";
import { DEFAULT_OPERATION_TIMEOUT_MS, TransportError } from "../transport/types";
import { canonical } from "./diff";
import { effectiveSelection } from "../../src/select";
import { AgentRunner, describeError, runnerFor } from "./runner";
import { LimitState, ProcessState, ProviderInputs, ProviderOutputs } from "./state";

/** Error codes that mean "the target is not there (any more)": drift, not failure. */
const GONE = new Set(["ENOTARGET", "ESRCH"]);

/** A resource operation failed; the message says where and why, never a credential. */
export class ResourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LockedProcessMemoryError";
  }
}

function lockRequest(i: ProviderInputs): LockRequest {
  return {
    target: i.target,
    mappings: effectiveSelection(i.mappings),
    ...(i.future ? { future: true } : {}),
    ...(i.onFault ? { onFault: true } : {}),
    ...(i.raiseMemlockLimit ? { raiseMemlockLimit: true } : {}),
  };
}

function timeoutOf(i: ProviderInputs, op: "create" | "update" | "delete" | "read"): number {
  return (op === "read" ? undefined : i.timeouts?.[op]) ?? DEFAULT_OPERATION_TIMEOUT_MS;
}

/**
 * One operation's deadline: customTimeouts bound the whole operation (every agent call of
 * an update or a delete together), not each call.
 */
interface Deadline {
  op: "create" | "update" | "delete";
  ms: number;
  /** Milliseconds left (at least 1: a call with no time left fails at once, clearly). */
  left(): number;
}

function deadlineOf(i: ProviderInputs, op: Deadline["op"]): Deadline {
  const ms = timeoutOf(i, op);
  const end = Date.now() + ms;
  return { op, ms, left: () => Math.max(1, end - Date.now()) };
}

/** For an error that is the deadline passing: which deadline, and what to change. */
function deadlineNote(e: unknown, d: Deadline, i: ProviderInputs): string {
  const timedOut = (e instanceof TransportError && e.code === "ETIMEDOUT") || (e instanceof DeployError && e.code === "ETIMEDOUT");
  if (!timedOut) return "";
  const given = i.timeouts?.[d.op] !== undefined;
  return ` (the ${d.op} deadline passed: ${given ? `customTimeouts.${d.op} is ${d.ms} ms` : `the default ${d.ms} ms, customTimeouts.${d.op} not set`}; if the host is only slow, give a longer customTimeouts.${d.op})`;
}

/** The agent's own wait for a concurrent lockmem on the same target, inside our deadline. */
function waitMs(timeoutMs: number): number {
  return Math.max(0, Math.min(30_000, timeoutMs - 5_000));
}

function processState(p: ProcessReport, limitSetTo?: LimitState): ProcessState {
  const sel = p.selection;
  return {
    pid: p.pid,
    startTime: p.startTime,
    lockedBytes: sel?.lockedBytes ?? 0,
    lockedMappings: sel?.lockedMappings ?? 0,
    selectedMappings: sel?.mappings ?? 0,
    memlockLimit: p.memlockLimit,
    ...(limitSetTo ? { limitSetTo } : {}),
  };
}

function inputsOf(props: ProviderOutputs | ProviderInputs): ProviderInputs {
  const { connection, agent, target, mappings, future, onFault, raiseMemlockLimit, timeouts } = props;
  const i: Record<string, unknown> = { connection, agent, target, mappings, future, onFault, raiseMemlockLimit, timeouts };
  for (const k of Object.keys(i)) if (i[k] === undefined) delete i[k];
  return i as unknown as ProviderInputs;
}

function hostOf(i: ProviderInputs, reported: string): string {
  return i.connection ? i.connection.host : reported;
}

function failureText(runner: AgentRunner, op: string, report: HostReport<ProcessResult>): string {
  const failed = report.processes.filter((p) => p.error);
  const lines = failed.map((p) => `process ${p.pid}: ${p.error!.message}${p.error!.hint ? ` (${p.error!.hint})` : ""}`);
  return `${runner.where}: ${op} failed for ${failed.length} of ${report.processes.length} processes: ${lines.join("; ")}`;
}

function failIfAnyFailed(runner: AgentRunner, op: string, report: HostReport<ProcessResult>): void {
  if (report.processes.some((p) => p.error)) throw new ResourceError(failureText(runner, op, report));
}

/**
 * A lock that took in some processes and failed in others (target.match "all"; each failed
 * one is left as it was by the agent). Thrown with the resource's id and its outputs: the
 * dynamic-provider host turns `id`/`properties`/`reasons` into the engine's
 * ErrorResourceInitFailed, so the state records what is locked (destroy unlocks it, the next
 * up retries the rest) instead of forgetting it.
 */
export class PartialLockError extends ResourceError {
  readonly reasons: string[];

  constructor(
    message: string,
    readonly id: string,
    readonly properties: ProviderOutputs,
  ) {
    super(message);
    this.reasons = [message];
  }
}

async function call<T>(runner: AgentRunner, op: string, request: Parameters<AgentRunner["call"]>[0], d: Deadline, i: ProviderInputs): Promise<T> {
  try {
    return await runner.call<T>(request, d.left());
  } catch (e) {
    throw new ResourceError(`${op}: ${describeError(e, runner.where)}${deadlineNote(e, d, i)}`);
  }
}

/**
 * Locks per the inputs and returns the outputs. `previous`: limits this resource set before.
 * Some processes locked and others not: PartialLockError with the outputs of the locked ones.
 */
async function lock(i: ProviderInputs, op: "create" | "update", id: string, previous: ProcessState[] = [], d = deadlineOf(i, op)): Promise<ProviderOutputs> {
  const runner = runnerFor(i);
  const report = await call<HostReport<ProcessResult>>(runner, "locking", { op: "lock", args: lockRequest(i), waitMs: waitMs(d.left()) }, d, i);
  // A process that exited during the run (outcome "gone", as the CLI's exit codes count it)
  // is not a failure to lock the others: it is left out of the state, with a warning.
  const gone = report.processes.filter((p) => p.error && p.outcome === "gone");
  const failed = report.processes.filter((p) => p.error && p.outcome !== "gone");
  const locked = report.processes.filter((p) => !p.error);
  if (locked.length === 0) failIfAnyFailed(runner, "lock", report);
  const processes = locked.map((p) => {
    const earlier = previous.find((e) => e.pid === p.pid && e.startTime === p.startTime)?.limitSetTo;
    const raised = p.action?.limitRaised?.to;
    return processState(p, raised ?? (earlier && canonical(earlier) === canonical(p.memlockLimit) ? earlier : undefined));
  });
  const warnings = [
    ...report.processes.flatMap((p) => p.warnings.map((w) => `process ${p.pid}: ${w}`)),
    ...gone.map((p) => `process ${p.pid}: exited during the lock; not recorded`),
  ];
  const inSync = failed.length === 0 && locked.every((p) => p.selection?.inSync !== false);
  const drift = [
    ...failed.map((p) => `process ${p.pid}: the lock failed: ${p.error!.message}`),
    ...(locked.some((p) => p.selection?.inSync === false) ? ["selected mappings stayed unlocked after the lock: see warnings"] : []),
  ];
  const outs: ProviderOutputs = {
    ...i,
    host: hostOf(i, report.host),
    processes,
    lockedBytes: processes.reduce((a, p) => a + p.lockedBytes, 0),
    inSync,
    drift,
    warnings,
  };
  if (failed.length > 0) {
    const done = `locked in process${locked.length > 1 ? "es" : ""} ${locked.map((p) => p.pid).join(", ")}, which the state records: destroy unlocks ${locked.length > 1 ? "them" : "it"}, the next up retries the others`;
    throw new PartialLockError(`${failureText(runner, "lock", report)}; ${done}`, id, outs);
  }
  return outs;
}

export async function create(inputs: ProviderInputs): Promise<{ id: string; outs: ProviderOutputs }> {
  const id = `lockmem-${crypto.randomUUID()}`;
  return { id, outs: await lock(inputs, "create", id) };
}

/** Reports what is on the host; a target that is gone or restarted is drift, never a removal. */
/** `d`: the deadline of the update that reads its end state; a refresh has its own timeout. */
export async function read(id: string, props: ProviderOutputs, d?: Deadline): Promise<{ id: string; props: ProviderOutputs; inputs: ProviderInputs }> {
  const i = inputsOf(props);
  const runner = runnerFor(i);
  const drift: string[] = [];
  let processes: ProviderOutputs["processes"] = [];
  let host = props.host;
  try {
    const report = await runner.call<HostReport<ProcessReport>>({ op: "status", args: { target: i.target, mappings: effectiveSelection(i.mappings) } }, d ? d.left() : timeoutOf(i, "read"));
    host = hostOf(i, report.host);
    for (const p of report.processes) {
      const before = props.processes?.find((e) => e.pid === p.pid && e.startTime === p.startTime);
      const state = processState(p, before?.limitSetTo);
      processes.push(state);
      if (!before) {
        drift.push(`process ${p.pid} (started at tick ${p.startTime}) is not the one that was locked${(props.processes ?? []).length ? ` (was ${(props.processes ?? []).map((e) => e.pid).join(", ")})` : ""}: the target restarted`);
      }
      if (p.selection && !p.selection.inSync) drift.push(`process ${p.pid}: ${p.selection.unlocked.length} selected mapping(s) are not locked`);
      if (state.limitSetTo && canonical(state.limitSetTo) !== canonical(p.memlockLimit)) {
        drift.push(`process ${p.pid}: RLIMIT_MEMLOCK is ${p.memlockLimit.soft}/${p.memlockLimit.hard}, lockmem set ${state.limitSetTo.soft}/${state.limitSetTo.hard}`);
      }
      const failed = (p as ProcessResult).error;
      if (failed) drift.push(`process ${p.pid}: ${failed.message}`);
    }
  } catch (e) {
    if (!(e instanceof LockError) || !(GONE.has(e.code) || e.code === "EAMBIGUOUS")) {
      throw new ResourceError(`reading: ${describeError(e, runner.where)}${d ? deadlineNote(e, d, i) : ""}`);
    }
    processes = [];
    drift.push(`target not found: ${describeError(e, runner.where)}`);
  }
  const lockedBytes = processes.reduce((a, p) => a + p.lockedBytes, 0);
  return { id, props: { ...props, ...i, host, processes, lockedBytes, inSync: drift.length === 0, drift, warnings: props.warnings ?? [] }, inputs: i };
}

/**
 * How to unlock what the old inputs selected and the new ones do not, after the new lock:
 * exact when only permissions differ (the common case); otherwise the old selection is
 * unlocked and the new one locked again, which leaves a gap of one agent round trip.
 */
export function leftBehind(old: SelectionSpec, next: SelectionSpec): { spec: SelectionSpec; before: boolean } | undefined {
  if (old.all === true) return next.all === true ? undefined : { spec: { all: true }, before: true };
  if (next.all === true) return undefined;
  const samePaths = canonical(old.paths ?? null) === canonical(next.paths ?? null);
  const sameKinds = canonical(old.kinds ?? null) === canonical(next.kinds ?? null);
  if (samePaths && sameKinds && old.permissions && next.permissions) {
    const covered = (perm: string): boolean => next.permissions!.some((n) => n === perm || (n.length === 3 && perm.startsWith(n)));
    const dropped = old.permissions.filter((p) => !covered(p));
    // A 3-letter old entry with 4-letter new ones ("r-x" -> "r-xp") is only partly covered.
    if (dropped.every((p) => !next.permissions!.some((n) => n.startsWith(p)))) {
      return dropped.length === 0 ? undefined : { spec: { ...old, permissions: dropped }, before: false };
    }
  }
  if (canonical(old) === canonical(next)) return undefined;
  return { spec: old, before: true };
}

export async function update(id: string, olds: ProviderOutputs, news: ProviderInputs): Promise<{ outs: ProviderOutputs }> {
  const undo = leftBehind(effectiveSelection(olds.mappings), effectiveSelection(news.mappings));
  // Only munlockall clears MCL_FUTURE: unlock the old selection with it, then lock anew.
  const futureOff = olds.future === true && news.future !== true;
  const d = deadlineOf(news, "update");
  const unlockOld = async (spec: SelectionSpec, future: boolean): Promise<void> => {
    const runner = runnerFor(olds);
    for (const p of olds.processes ?? []) {
      if (!(await stillThere(runner, p, d, news))) continue;
      const args: UnlockRequest = { target: { pid: p.pid }, mappings: spec, ...(future ? { future: true } : {}) };
      const report = await call<HostReport<ProcessResult>>(runner, "unlocking what is no longer selected", { op: "unlock", args, waitMs: waitMs(d.left()) }, d, news);
      failIfAnyFailed(runner, "unlock", report);
    }
  };
  if (futureOff) await unlockOld(effectiveSelection(olds.mappings), true);
  else if (undo?.before) await unlockOld(undo.spec, false);
  const unlockAfter = undo !== undefined && !undo.before && !futureOff;
  let outs: ProviderOutputs;
  try {
    outs = await lock(news, "update", id, olds.processes, d);
  } catch (e) {
    // Locked in part: what is no longer selected must not outlive the old state either.
    if (!(e instanceof PartialLockError) || !unlockAfter) throw e;
    try {
      await unlockOld(undo.spec, false);
    } catch (u) {
      throw new PartialLockError(`${e.message}; unlocking what is no longer selected failed too: ${(u as Error).message}`, e.id, e.properties);
    }
    throw e;
  }
  if (!unlockAfter) return { outs };
  await unlockOld(undo.spec, false);
  // Report the end state, after the unlock.
  return { outs: (await read(id, outs, d)).props };
}

/** True when the recorded process still runs (same pid and start time). */
async function stillThere(runner: AgentRunner, p: ProcessState, d: Deadline, i: ProviderInputs): Promise<boolean> {
  try {
    const report = await runner.call<HostReport<ProcessReport>>({ op: "status", args: { target: { pid: p.pid } } }, d.left());
    return report.processes.some((r) => r.pid === p.pid && r.startTime === p.startTime);
  } catch (e) {
    if (e instanceof LockError && GONE.has(e.code)) return false;
    throw new ResourceError(`checking process ${p.pid}: ${describeError(e, runner.where)}${deadlineNote(e, d, i)}`);
  }
}

/** Unlocks what this resource locked, in the processes it locked; gone ones are skipped. */
export async function remove(_id: string, props: ProviderOutputs): Promise<void> {
  const i = inputsOf(props);
  const runner = runnerFor(i);
  const d = deadlineOf(i, "delete");
  for (const p of props.processes ?? []) {
    if (!(await stillThere(runner, p, d, i))) continue;
    const args: UnlockRequest = { target: { pid: p.pid }, mappings: effectiveSelection(i.mappings), ...(i.future ? { future: true } : {}) };
    try {
      const report = await runner.call<HostReport<ProcessResult>>({ op: "unlock", args, waitMs: waitMs(d.left()) }, d.left());
      failIfAnyFailed(runner, "unlock", report);
    } catch (e) {
      if (e instanceof LockError && GONE.has(e.code)) continue; // exited meanwhile
      if (e instanceof ResourceError) throw e;
      throw new ResourceError(`unlocking: ${describeError(e, runner.where)}${deadlineNote(e, d, i)}`);
    }
  }
}
