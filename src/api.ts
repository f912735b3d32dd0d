// The host library: what the CLI and the agent call. Every function takes and returns
// JSON-able data (bigints are rendered as decimal strings), so the agent protocol is a
// thin wrapper. Flow per process: resolve -> snapshot (/proc) -> plan -> check limits ->
// apply in one ptrace session -> snapshot again to verify.
import * as os from "os";
import { cgroupHeadroom, readMemoryCgroup } from "./cgroup";
import { LockError } from "./errors";
import { formatBytes } from "./format";
import { toLockError, runInTarget, explainPtraceDenied } from "./inject";
import { readLimitRecord, removeLimitRecord, writeLimitRecord } from "./limitStore";
import { native } from "./native";
import { BatchReply, SyscallOp } from "./native";
import { pauseBoundedSteps, Plan, planLock, planUnlock, TargetFacts } from "./plan";
import { deadSessions, recoverInterrupted } from "./journal";
import { DEFAULT_TARGET_WAIT_MS, withTargetLocks } from "./target-lock";
import { MemlockLimit, readMemlockLimit, RLIM_INFINITY } from "./proc/limits";
import { readMappings } from "./proc/smaps";
import { hasCapIpcLock, ProcessStatus, readStatus } from "./proc/status";
import { isLocked, isLockOnFault, notLockableReason, selectMappings, validateSelection, defaultSelection } from "./select";
import { readProcessRef, resolveTarget, sameProcess, validateTargetSpec } from "./target";
import { Mapping, ProcessRef, SelectionSpec, TargetSpec } from "./types";

export interface LockRequest {
  target: TargetSpec;
  mappings?: SelectionSpec;
  /** MCL_FUTURE: also lock mappings created later. */
  future?: boolean;
  /** MLOCK_ONFAULT / MCL_ONFAULT: lock pages only as they become resident. */
  onFault?: boolean;
  /** Raise the target's RLIMIT_MEMLOCK to what the plan needs (restored on unlock). */
  raiseMemlockLimit?: boolean;
  /** Suspend the target's seccomp filter for lockmem's calls (PTRACE_O_SUSPEND_SECCOMP). */
  allowSeccompSuspend?: boolean;
  /** Split the work so that no single stop of the target exceeds this many ms of work. */
  maxPauseMs?: number;
  dryRun?: boolean;
}

export interface UnlockRequest {
  target: TargetSpec;
  mappings?: SelectionSpec;
  /** Also clear MCL_FUTURE. Implied by mappings.all. */
  future?: boolean;
  allowSeccompSuspend?: boolean;
  maxPauseMs?: number;
  dryRun?: boolean;
}

export interface StatusRequest {
  target: TargetSpec;
  /** When given, each mapping reports whether it is selected, and the totals of the selection. */
  mappings?: SelectionSpec;
}

// ---------------------------------------------------------------------------------------
// Reports

export interface MappingReport {
  address: string;
  end: string;
  size: number;
  rss: number;
  anonymous: number;
  /** smaps `Locked:`: resident bytes that are locked. */
  locked: number;
  mode: string;
  mapping: string;
  kind: string;
  /** The VMA is marked locked (VmFlags lo). */
  vmLocked: boolean;
  onFault: boolean;
  lockable: boolean;
  reason?: string;
  selected?: boolean;
}

export interface LimitReport {
  /** Decimal bytes or "unlimited". */
  soft: string;
  hard: string;
}

export interface SelectionSummary {
  mappings: number;
  bytes: number;
  lockedMappings: number;
  /** Virtual bytes of selected mappings marked locked. */
  lockedBytes: number;
  /** Selected mappings not locked, by address. */
  unlocked: string[];
  inSync: boolean;
}

export interface ProcessReport {
  pid: number;
  startTime: string;
  comm: string;
  cmdline: string;
  state: string;
  capIpcLock: boolean;
  seccomp: number;
  memlockLimit: LimitReport;
  vmSize: number;
  vmLck: number;
  vmRss: number;
  totals: { size: number; rss: number; anonymous: number; locked: number };
  mappings: MappingReport[];
  selection?: SelectionSummary;
  /**
   * Sessions a lockmem process died in before finishing (its journal is left and nobody
   * holds the target's lock): the process may be stopped until its guardian or the next
   * lockmem run on it recovers it.
   */
  heldByDeadRun?: { tid: number; owner?: number; since?: string }[];
}

export interface ActionReport {
  kind: "lock" | "unlock";
  whole: boolean;
  changedMappings: number;
  changedBytes: number;
  unchangedMappings: number;
  notLockable: { address: string; mapping: string; reason: string }[];
  residentBytes: number;
  neededLimit: string;
  syscalls: number;
  thread?: { tid: number; reason: string };
  pauseUs?: number;
  rearmed?: boolean;
  /** Signals that arrived during a hold and were delivered in place (threads in ppoll & co). */
  signalsDelivered?: number;
  /** Distinct signals that arrived during a hold, kept pending and delivered right after it. */
  signalsDeferred?: number;
  /** ptrace sessions used (more than one with maxPauseMs). */
  sessions?: number;
  limitRaised?: { from: LimitReport; to: LimitReport };
  limitRestored?: { from: LimitReport; to: LimitReport };
}

export interface ProcessResult extends ProcessReport {
  action?: ActionReport;
  warnings: string[];
  error?: ReturnType<LockError["toJSON"]>;
}

export interface HostReport<P> {
  host: string;
  dryRun?: boolean;
  processes: P[];
}

export interface DoctorCheck {
  check: string;
  ok: boolean;
  detail: string;
  hint?: string;
}

export interface DoctorProcess {
  pid: number;
  comm: string;
  ok: boolean;
  checks: DoctorCheck[];
}

// ---------------------------------------------------------------------------------------
// Snapshots of a process

interface Snapshot {
  ref: ProcessRef;
  status: ProcessStatus;
  mappings: Mapping[];
  limit: MemlockLimit;
}

function limitText(v: bigint): string {
  return v === RLIM_INFINITY ? "unlimited" : v.toString();
}

function limitReport(l: MemlockLimit): LimitReport {
  return { soft: limitText(l.soft), hard: limitText(l.hard) };
}

function hex(v: bigint): string {
  return v.toString(16);
}

async function snapshot(ref: ProcessRef): Promise<Snapshot> {
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

function facts(snap: Snapshot): TargetFacts {
  return { mappings: snap.mappings, vmLck: snap.status.vmLck, vmSize: snap.status.vmSize, capIpcLock: hasCapIpcLock(snap.status) };
}

function mappingReport(m: Mapping, selected?: Set<Mapping>): MappingReport {
  const reason = notLockableReason(m);
  return {
    address: hex(m.start),
    end: hex(m.end),
    size: m.size,
    rss: m.rss,
    anonymous: m.anonymous,
    locked: m.locked,
    mode: m.perms,
    mapping: m.path === "" ? "[ anon ]" : m.path,
    kind: m.kind,
    vmLocked: isLocked(m),
    onFault: isLockOnFault(m),
    lockable: reason === undefined,
    ...(reason ? { reason } : {}),
    ...(selected ? { selected: selected.has(m) } : {}),
  };
}

function selectionSummary(mappings: Mapping[], spec: SelectionSpec): SelectionSummary {
  const { selected } = selectMappings(mappings, spec);
  const locked = selected.filter(isLocked);
  const unlocked = selected.filter((m) => !isLocked(m));
  return {
    mappings: selected.length,
    bytes: selected.reduce((a, m) => a + m.size, 0),
    lockedMappings: locked.length,
    lockedBytes: locked.reduce((a, m) => a + m.size, 0),
    unlocked: unlocked.map((m) => hex(m.start)),
    inSync: unlocked.length === 0,
  };
}

function processReport(snap: Snapshot, spec?: SelectionSpec): ProcessReport {
  const selected = spec ? new Set(selectMappings(snap.mappings, spec).selected) : undefined;
  const totals = { size: 0, rss: 0, anonymous: 0, locked: 0 };
  for (const m of snap.mappings) {
    totals.size += m.size;
    totals.rss += m.rss;
    totals.anonymous += m.anonymous;
    totals.locked += m.locked;
  }
  return {
    pid: snap.ref.pid,
    startTime: snap.ref.startTime,
    comm: snap.ref.comm,
    cmdline: snap.ref.cmdline,
    state: snap.status.state,
    capIpcLock: hasCapIpcLock(snap.status),
    seccomp: snap.status.seccomp,
    memlockLimit: limitReport(snap.limit),
    vmSize: snap.status.vmSize,
    vmLck: snap.status.vmLck,
    vmRss: snap.status.vmRss,
    totals,
    mappings: snap.mappings.map((m) => mappingReport(m, selected)),
    ...(spec ? { selection: selectionSummary(snap.mappings, spec) } : {}),
  };
}

// ---------------------------------------------------------------------------------------
// Validation and resolution

function effectiveSelection(spec: SelectionSpec | undefined): SelectionSpec {
  return spec ?? defaultSelection;
}

function validateRequest(req: { target: TargetSpec; mappings?: SelectionSpec }): void {
  if (!req || typeof req !== "object" || !req.target || typeof req.target !== "object") {
    throw new LockError({ code: "EUSAGE", field: "target", message: "target: required (one of pid, pidFile, systemdUnit, name, cmdline)" });
  }
  const targetProblem = validateTargetSpec(req.target);
  if (targetProblem) throw targetProblem;
  if (req.mappings !== undefined) {
    const selectionProblem = validateSelection(req.mappings);
    if (selectionProblem) throw selectionProblem;
  }
}

async function resolve(req: { target: TargetSpec; mappings?: SelectionSpec }): Promise<ProcessRef[]> {
  validateRequest(req);
  return resolveTarget(req.target);
}

/** One failing process: throw its error; several: report each. */
async function perProcess<P>(refs: ProcessRef[], work: (ref: ProcessRef) => Promise<P>, failed: (ref: ProcessRef, err: LockError) => P): Promise<P[]> {
  if (refs.length === 1) {
    try {
      return [await work(refs[0])];
    } catch (err) {
      throw await toLockError(err, refs[0].pid);
    }
  }
  const out: P[] = [];
  for (const ref of refs) {
    try {
      out.push(await work(ref));
    } catch (err) {
      out.push(failed(ref, await toLockError(err, ref.pid)));
    }
  }
  return out;
}

function failedResult(ref: ProcessRef, err: LockError): ProcessResult {
  return {
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

// ---------------------------------------------------------------------------------------
// Safety checks before any ptrace

function refuseUnsafeTarget(snap: Snapshot): void {
  const pid = snap.ref.pid;
  if (snap.status.state === "Z" || snap.status.state === "X") {
    throw new LockError({ code: "ESRCH", pid, message: `process ${pid} is a zombie: it has no memory to lock` });
  }
  if (snap.status.seccomp === 1) {
    throw new LockError({
      code: "ESECCOMP",
      pid,
      message: `process ${pid} runs in strict seccomp mode: calling mlock would kill it, so lockmem will not`,
      hint: "strict mode allows only read, write, exit and sigreturn; lock the memory from inside the program",
    });
  }
  // Seccomp mode 2 (filter): the addon evaluates the filter for every call before making
  // any, and refuses (ESECCOMP) unless it allows them all.
  if (snap.status.tracerPid !== 0) {
    throw new LockError({
      code: "EBUSY",
      pid,
      message: `process ${pid} is already traced by process ${snap.status.tracerPid} (a debugger or strace?)`,
      hint: "detach that tracer first; a process has one tracer at a time",
    });
  }
}


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
async function limitNeeded(snap: Snapshot, plan: Plan, raise: boolean): Promise<MemlockLimit | undefined> {
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

/** What a failure message says when every call of the attempt was undone. */
const ALL_UNDONE = "nothing stays locked from this attempt";

function explainCallFailure(errno: number, snap: Snapshot, plan: Plan, call: string): LockError {
  const pid = snap.ref.pid;
  const undone = ALL_UNDONE;
  switch (errno) {
    case 12: // ENOMEM
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
    case 1: // EPERM
      return new LockError({
        code: "EPERM",
        pid,
        errno,
        syscall: call,
        message: `${call} in process ${pid} failed with EPERM: it lacks CAP_IPC_LOCK and its RLIMIT_MEMLOCK is 0; ${undone}`,
        hint: "pass --raise-limit, raise LimitMEMLOCK=, or grant CAP_IPC_LOCK",
      });
    case 11: // EAGAIN
      return new LockError({
        code: "EAGAIN",
        pid,
        errno,
        syscall: call,
        message: `${call} in process ${pid} failed with EAGAIN: some pages could not be locked; ${undone}`,
        hint: "retry; if it persists, check memory pressure and the memory cgroup",
      });
    default:
      return new LockError({ code: "EINTERNAL", pid, errno, syscall: call, message: `${call} in process ${pid} failed with errno ${errno}; ${undone}` });
  }
}

function actionReport(plan: Plan): ActionReport {
  return {
    kind: plan.kind,
    whole: plan.whole,
    changedMappings: plan.changing.length,
    changedBytes: plan.bytes,
    unchangedMappings: plan.unchanged.length,
    notLockable: plan.notLockable.map(({ mapping, reason }) => ({ address: hex(mapping.start), mapping: mapping.path || "[ anon ]", reason })),
    residentBytes: plan.residentBytes,
    neededLimit: plan.neededLimit.toString(),
    syscalls: plan.ops.length,
  };
}

function callName(nr: number): string {
  const n = native().syscalls;
  return nr === n.mlock2 ? "mlock2" : nr === n.munlock ? "munlock" : nr === n.mlockall ? "mlockall" : nr === n.munlockall ? "munlockall" : `syscall ${nr}`;
}

interface ApplyOptions {
  suspendSeccomp?: boolean;
  maxPauseMs?: number;
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

async function runSession(snap: Snapshot, plan: Plan, ops: SyscallOp[], action: ActionReport, opts: ApplyOptions): Promise<BatchReply> {
  const { reply, thread } = await runInTarget(snap.ref.pid, snap.mappings, ops, {
    startTime: snap.ref.startTime,
    checkSeccomp: snap.status.seccomp === 2,
    suspendSeccomp: opts.suspendSeccomp,
  });
  recordSession(action, reply, thread);
  const failedAt = reply.results.findIndex((r) => r.errno !== 0);
  if (failedAt >= 0) {
    const err = explainCallFailure(reply.results[failedAt].errno, snap, plan, callName(ops[failedAt].nr));
    const undoFailed = reply.undoResults.filter((r) => r.errno !== 0).length;
    if (undoFailed === 0) throw err;
    throw withUndoFailure(err, `${undoFailed} of the ${reply.undoResults.length} undo call(s) in the target failed (errno ${reply.undoResults.find((r) => r.errno !== 0)!.errno})`, []);
  }
  return reply;
}

/** A range a failed attempt could not undo. */
interface LeftLocked {
  start: bigint;
  len: bigint;
}

/**
 * The failure `err`, saying that undoing the attempt failed too (instead of "nothing stays
 * locked"), which ranges may stay locked and how to clear them: the undo error is a warning
 * the operator must see, never dropped in favour of the original error alone.
 */
function withUndoFailure(err: LockError, why: string, left: LeftLocked[]): LockError {
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

const MIN_CHUNK = 64 * 1024;
const MAX_CHUNK = 1 << 30;
const FIRST_CHUNK = 2 * 1024 * 1024;

/**
 * Bounded pauses: every range call is cut into chunks sized from the rate measured on the
 * previous ones, one ptrace session each, so that the target runs between them. The
 * result is the same as one big batch; a failure undoes the chunks done so far.
 */
async function applyInChunks(snap: Snapshot, plan: Plan, action: ActionReport, opts: ApplyOptions & { maxPauseMs: number }): Promise<void> {
  const { ranges, finalOps } = pauseBoundedSteps(plan, snap.mappings, native().syscalls);
  const budgetNs = opts.maxPauseMs * 1e6 * 0.8;
  let nsPerByte = 0;
  let overheadNs = 0;
  let chunk = FIRST_CHUNK;
  const done: SyscallOp[] = [];
  try {
    for (const r of ranges) {
      for (let start = r.start; start < r.end; ) {
        const len = BigInt(Math.min(chunk, Number(r.end - start)));
        const op: SyscallOp = { nr: r.nr, args: [start, len, ...r.extraArgs], ...(r.undoNr !== undefined ? { undo: { nr: r.undoNr, args: [start, len] } } : {}) };
        const reply = await runSession(snap, plan, [op], action, opts);
        done.push(op);
        const callNs = reply.results[0].ns;
        const rate = callNs / Number(len);
        // Conservative: the slowest recent rate decides the next chunk, and what the
        // session costs besides the call (stopping, resuming: high on a busy machine)
        // comes out of the budget first.
        nsPerByte = Math.max(rate, nsPerByte * 0.5);
        overheadNs = Math.max(reply.pauseNs - callNs, overheadNs * 0.5);
        const callBudget = Math.max(budgetNs * 0.2, budgetNs - overheadNs);
        chunk = Math.floor(Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, callBudget / Math.max(nsPerByte, 1e-6))) / 4096) * 4096;
        start += len;
      }
    }
    if (finalOps.length > 0) await runSession(snap, plan, finalOps, action, opts);
  } catch (err) {
    // Undo, newest first, in bounded sessions too. An undo that fails is reported with the
    // original error (what stays locked, and how to clear it), not dropped.
    const left: LeftLocked[] = [];
    let firstUndoError: string | undefined;
    for (const op of done.reverse()) {
      if (!op.undo) continue;
      try {
        const { reply } = await runInTarget(snap.ref.pid, snap.mappings, [op.undo], { startTime: snap.ref.startTime, checkSeccomp: snap.status.seccomp === 2, suspendSeccomp: opts.suspendSeccomp });
        if (reply.results[0].errno !== 0) throw new Error(`munlock returned errno ${reply.results[0].errno}`);
      } catch (undoErr) {
        firstUndoError ??= undoErr instanceof Error ? undoErr.message : String(undoErr);
        left.push({ start: op.undo.args[0], len: op.undo.args[1] });
      }
    }
    if (left.length === 0) throw err;
    const original = err instanceof LockError ? err : await toLockError(err, snap.ref.pid);
    throw withUndoFailure(original, `${left.length} of ${done.filter((o) => o.undo).length} chunk(s) could not be unlocked again (first: ${firstUndoError})`, left);
  }
}

async function applyPlan(snap: Snapshot, plan: Plan, action: ActionReport, opts: ApplyOptions = {}): Promise<void> {
  if (plan.ops.length === 0) return;
  if (opts.maxPauseMs !== undefined) return applyInChunks(snap, plan, action, { ...opts, maxPauseMs: opts.maxPauseMs });
  await runSession(snap, plan, plan.ops, action, opts);
}

// ---------------------------------------------------------------------------------------
// Operations

export async function status(req: StatusRequest): Promise<HostReport<ProcessReport>> {
  const refs = await resolve(req);
  const processes = await perProcess(
    refs,
    async (ref) => withDeadSessions(processReport(await snapshot(ref), req.mappings === undefined ? undefined : effectiveSelection(req.mappings))),
    (ref, err) => failedResult(ref, err),
  );
  return { host: os.hostname(), processes };
}

async function withDeadSessions<R extends ProcessReport>(report: R): Promise<R> {
  const dead = await deadSessions(report.pid).catch(() => []);
  return dead.length > 0 ? { ...report, heldByDeadRun: dead } : report;
}

/** Runs a change of one process under its target lock (one lockmem per target, src/target-lock.ts). */
function serialised<T>(ref: ProcessRef, op: string, fn: () => Promise<T>): Promise<T> {
  return withTargetLocks([ref.pid], { op, waitMs: DEFAULT_TARGET_WAIT_MS }, fn);
}

/** Finishes an injection an earlier lockmem run left half done (it died). */
async function recoverFirst(ref: ProcessRef, warnings: string[]): Promise<void> {
  for (const r of await recoverInterrupted(ref.pid)) {
    warnings.push(`recovered an interrupted lockmem run on process ${r.pid}: ${r.detail}`);
  }
}

async function lockOne(req: LockRequest, ref: ProcessRef): Promise<ProcessResult> {
  const spec = effectiveSelection(req.mappings);
  const early: string[] = [];
  if (!req.dryRun) await recoverFirst(ref, early);
  const snap = await snapshot(ref);
  refuseUnsafeTarget(snap);
  const plan = planLock(facts(snap), spec, { future: req.future, onFault: req.onFault }, native().syscalls);
  const action = actionReport(plan);
  const warnings: string[] = [...(ref.warnings ?? []), ...early];
  const newLimit = await limitNeeded(snap, plan, req.raiseMemlockLimit === true);
  const headroom = cgroupHeadroom(await readMemoryCgroup(ref.pid));
  if (headroom !== undefined && plan.residentBytes > headroom) {
    throw new LockError({
      code: "ENOMEM",
      pid: ref.pid,
      message: `locking would make ${formatBytes(plan.residentBytes)} resident in process ${ref.pid}, but its memory cgroup has only ${formatBytes(headroom)} left before memory.max: the OOM killer would act`,
      hint: "raise the cgroup's memory.max (systemd: MemoryMax=), use --on-fault, or lock fewer mappings",
    });
  }
  if (req.dryRun) {
    if (newLimit) action.limitRaised = { from: limitReport(snap.limit), to: limitReport(newLimit) };
    return { ...processReport(snap, spec), action, warnings };
  }
  let raisedNow: MemlockLimit | undefined;
  if (newLimit) {
    const prior = await readLimitRecord(ref, warnings);
    const previous = setLimit(ref, newLimit);
    raisedNow = previous;
    await writeLimitRecord({
      pid: ref.pid,
      startTime: ref.startTime,
      // Across several raises, the limit to restore is the one before the first.
      original: prior ? prior.original : { soft: previous.soft.toString(), hard: previous.hard.toString() },
      raisedTo: { soft: newLimit.soft.toString(), hard: newLimit.hard.toString() },
      at: new Date().toISOString(),
    });
    action.limitRaised = { from: limitReport(previous), to: limitReport(newLimit) };
    if (prior) raisedNow = undefined; // an earlier raise owns the record
  }
  try {
    await applyPlan(snap, plan, action, { suspendSeccomp: req.allowSeccompSuspend, maxPauseMs: req.maxPauseMs });
  } catch (err) {
    if (raisedNow) {
      // Every failure path leaves the target as it was, its limit included.
      setLimit(ref, raisedNow);
      await removeLimitRecord(ref);
    }
    throw err;
  }
  const after = await snapshot(ref);
  const report = processReport(after, spec);
  if (report.selection && !report.selection.inSync) {
    warnings.push(`${report.selection.unlocked.length} selected mapping(s) are not locked after the call: ${report.selection.unlocked.join(", ")}`);
  }
  return { ...report, action, warnings };
}

/** A dry run of lock: what would change, how many bytes, what limit it needs. */
export async function plan(req: LockRequest): Promise<HostReport<ProcessResult>> {
  return lock({ ...req, dryRun: true });
}

export async function lock(req: LockRequest): Promise<HostReport<ProcessResult>> {
  const refs = await resolve(req);
  const processes = await perProcess(refs, (ref) => (req.dryRun ? lockOne(req, ref) : serialised(ref, "lock", () => lockOne(req, ref))), failedResult);
  return { host: os.hostname(), ...(req.dryRun ? { dryRun: true } : {}), processes };
}

async function restoreLimit(ref: ProcessRef, after: Snapshot, action: ActionReport, warnings: string[]): Promise<void> {
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

async function unlockOne(req: UnlockRequest, ref: ProcessRef): Promise<ProcessResult> {
  const spec = effectiveSelection(req.mappings);
  const warnings: string[] = [...(ref.warnings ?? [])];
  if (!req.dryRun) await recoverFirst(ref, warnings);
  const snap = await snapshot(ref);
  const plan = planUnlock(facts(snap), spec, { future: req.future }, native().syscalls);
  const action = actionReport(plan);
  if (req.dryRun) return { ...processReport(snap, spec), action, warnings };
  if (plan.ops.length > 0) {
    refuseUnsafeTarget(snap);
    await applyPlan(snap, plan, action, { suspendSeccomp: req.allowSeccompSuspend, maxPauseMs: req.maxPauseMs });
  }
  const after = await snapshot(ref);
  await restoreLimit(ref, after, action, warnings);
  const final = action.limitRestored ? await snapshot(ref) : after;
  const report = processReport(final, spec);
  if (report.selection && report.selection.lockedMappings > 0) {
    warnings.push(`${report.selection.lockedMappings} selected mapping(s) are still locked`);
  }
  return { ...report, action, warnings };
}

export async function unlock(req: UnlockRequest): Promise<HostReport<ProcessResult>> {
  const refs = await resolve(req);
  const processes = await perProcess(refs, (ref) => (req.dryRun ? unlockOne(req, ref) : serialised(ref, "unlock", () => unlockOne(req, ref))), failedResult);
  return { host: os.hostname(), ...(req.dryRun ? { dryRun: true } : {}), processes };
}

// ---------------------------------------------------------------------------------------
// doctor: every reason a lock could fail, checked without touching the target.

async function doctorOne(req: StatusRequest, ref: ProcessRef): Promise<DoctorProcess> {
  const snap = await snapshot(ref);
  const checks: DoctorCheck[] = [];
  const pid = ref.pid;
  const own = await readStatus(process.pid);
  const ptraceOk = ((own.capEff >> 19n) & 1n) === 1n && snap.status.tracerPid === 0;
  if (ptraceOk) {
    checks.push({ check: "ptrace", ok: true, detail: "lockmem holds CAP_SYS_PTRACE and nobody else traces the process" });
  } else {
    const why = await explainPtraceDenied(pid);
    checks.push({ check: "ptrace", ok: false, detail: why.message, hint: why.hint });
  }
  checks.push(
    process.arch === "x64"
      ? { check: "architecture", ok: true, detail: "x86_64" }
      : { check: "architecture", ok: false, detail: `${process.arch} is not supported yet`, hint: "lockmem injects on x86_64 only" },
  );
  const dead = await deadSessions(pid).catch(() => []);
  checks.push(
    dead.length === 0
      ? { check: "lockmem session", ok: true, detail: "no unfinished lockmem session on this process" }
      : {
          check: "lockmem session",
          ok: false,
          detail: `held by a lockmem run that died mid-session (${dead.map((d) => `thread ${d.tid}${d.owner ? `, lockmem pid ${d.owner}` : ""}${d.since ? ` since ${d.since}` : ""}`).join("; ")}): the process may be stopped`,
          hint: `its guardian normally recovers it within milliseconds; \`lockmem recover --pid ${pid}\` (or any lock/unlock of it) does it now`,
        },
  );
  const hasVdso = snap.mappings.some((m) => m.kind === "vdso");
  checks.push(hasVdso ? { check: "vdso", ok: true, detail: "[vdso] present" } : { check: "vdso", ok: false, detail: "no [vdso] mapping", hint: "boot without vdso=0" });
  const seccompText = ["disabled", "strict", "filter"][snap.status.seccomp];
  checks.push(
    snap.status.seccomp === 0
      ? { check: "seccomp", ok: true, detail: "no seccomp" }
      : {
          check: "seccomp",
          ok: false,
          detail: `seccomp mode ${snap.status.seccomp} (${seccompText}): calling mlock may be denied or kill the process`,
          hint: "allow @memlock in its filter (systemd: SystemCallFilter=@memlock)",
        },
  );
  const cap = hasCapIpcLock(snap.status);
  checks.push({
    check: "CAP_IPC_LOCK",
    ok: true,
    detail: cap ? "the process holds CAP_IPC_LOCK: RLIMIT_MEMLOCK does not apply" : `missing privilege "ipc_lock" (euid = ${snap.status.uid.effective}): RLIMIT_MEMLOCK applies`,
  });
  const lockPlan = planLock(facts(snap), effectiveSelection(req.mappings), {}, native().syscalls);
  if (cap || lockPlan.neededLimit <= snap.limit.soft) {
    checks.push({ check: "RLIMIT_MEMLOCK", ok: true, detail: cap ? `${limitReport(snap.limit).soft} (not enforced)` : `${formatBytes(snap.limit.soft)} covers the ${formatBytes(lockPlan.neededLimit)} needed` });
  } else {
    checks.push({
      check: "RLIMIT_MEMLOCK",
      ok: false,
      detail: `soft limit ${formatBytes(snap.limit.soft)} (hard ${limitReport(snap.limit).hard}) is below the ${formatBytes(lockPlan.neededLimit)} needed`,
      hint: lockPlan.neededLimit <= snap.limit.hard ? "pass --raise-limit" : "raise LimitMEMLOCK= in its unit or grant CAP_IPC_LOCK (the hard limit is too low too)",
    });
  }
  const cg = await readMemoryCgroup(pid);
  const headroom = cgroupHeadroom(cg);
  if (headroom === undefined) {
    checks.push({ check: "memory cgroup", ok: true, detail: cg ? `${cg.path}: no memory.max` : "no memory cgroup limit found" });
  } else {
    const ok = lockPlan.residentBytes <= headroom;
    checks.push({
      check: "memory cgroup",
      ok,
      detail: `${cg?.path}: ${formatBytes(headroom)} left before memory.max; locking makes ${formatBytes(lockPlan.residentBytes)} resident`,
      ...(ok ? {} : { hint: "raise memory.max (MemoryMax=) or use --on-fault" }),
    });
  }
  return { pid, comm: ref.comm, ok: checks.every((c) => c.ok), checks };
}

export async function doctor(req: StatusRequest): Promise<HostReport<DoctorProcess>> {
  const refs = await resolve(req);
  const processes = await perProcess(refs, (ref) => doctorOne(req, ref), (ref, err) => ({
    pid: ref.pid,
    comm: ref.comm,
    ok: false,
    checks: [{ check: "process", ok: false, detail: err.message, hint: err.hint }],
  }));
  return { host: os.hostname(), processes };
}
