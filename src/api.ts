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
import { changingTarget, holdingTarget, StopReason, stopRequested } from "./interrupt";
import { readLockRecord, removeLockRecord, writeLockRecord } from "./lockRecord";
import { RangeCursor, SessionPacer } from "./pace";
import { ChunkableRange, pauseBoundedSteps, Plan, planLock, planUnlock, TargetFacts } from "./plan";
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
  /** Split the work so that no single stop of the target holds it longer than about this many ms. */
  maxPauseMs?: number;
  /** Stopped early (a signal, a closed output): keep the chunks already locked instead of undoing them. */
  keepOnInterrupt?: boolean;
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
  /** How: "mlockall", "mlock2 per range", "munlockall", "munlock per range", "munlockall, then mlock2 of what stays". */
  method: string;
  /** PROT_NONE reservations mlockall marks locked as well (VmLck counts them; see README "--all"). */
  reservedMappings: number;
  reservedBytes: number;
  /** VmLck (virtual bytes of locked VMAs) the plan leads to; the report's vmLck is what the kernel shows. */
  vmLckAfter: number;
  /** Stopped early: why, and whether what was done was undone. */
  interrupted?: { reason: StopReason; undone: boolean; sessionsDone: number };
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

/**
 * done: as asked; gone: the process exited during the run (not a failure to act on the
 * others); failed: left as it was (error says why); interrupted: stopped early, the report
 * says what is locked; skipped: not started, the run was stopped before it.
 */
export type Outcome = "done" | "gone" | "failed" | "interrupted" | "skipped";

export interface ProcessResult extends ProcessReport {
  outcome: Outcome;
  action?: ActionReport;
  warnings: string[];
  error?: ReturnType<LockError["toJSON"]>;
}

export interface HostReport<P> {
  host: string;
  dryRun?: boolean;
  processes: P[];
  /** lock/unlock: processes per outcome. */
  summary?: Record<Outcome, number>;
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

/**
 * One failing process: throw its error; several: report each. A run asked to stop starts no
 * further process (`failed` gets an EINTR error for each).
 */
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

function stopText(reason: StopReason): string {
  return reason === "EPIPE" ? "its output closing (EPIPE: nobody reads it any more)" : reason;
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

function failedResult(ref: ProcessRef, err: LockError): ProcessResult {
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
    method: methodOf(plan),
    reservedMappings: plan.reserved.length,
    reservedBytes: plan.reserved.reduce((a, m) => a + m.size, 0),
    vmLckAfter: plan.vmLckAfter,
  };
}

function methodOf(plan: Plan): string {
  if (plan.whole) return plan.kind === "lock" ? "mlockall" : "munlockall";
  if (plan.kind === "unlock" && plan.ops[0]?.nr === native().syscalls.munlockall) return "munlockall, then mlock2 of what stays locked";
  return plan.kind === "lock" ? "mlock2 per range" : "munlock per range";
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

function callName(nr: number): string {
  const n = native().syscalls;
  return nr === n.mlock2 ? "mlock2" : nr === n.munlock ? "munlock" : nr === n.mlockall ? "mlockall" : nr === n.munlockall ? "munlockall" : `syscall ${nr}`;
}

interface ApplyOptions {
  suspendSeccomp?: boolean;
  maxPauseMs?: number;
  keepOnInterrupt?: boolean;
  /** Called once a session has changed the target (interrupt.ts: the run must then report before it ends). */
  changed?: () => void;
}

/** A point where no target is held: a run asked to stop stops here (EINTR). */
function stopPoint(pid: number): void {
  const reason = stopRequested();
  if (reason) throw new LockError({ code: "EINTR", pid, stage: reason, message: `stopped by ${stopText(reason)}` });
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
  const { reply, thread } = await holdingTarget(() =>
    runInTarget(snap.ref.pid, snap.mappings, ops, {
      startTime: snap.ref.startTime,
      checkSeccomp: snap.status.seccomp === 2,
      suspendSeccomp: opts.suspendSeccomp,
    }),
  );
  recordSession(action, reply, thread);
  const failedAt = reply.results.findIndex((r) => r.errno !== 0);
  if (failedAt >= 0) {
    const err = explainCallFailure(reply.results[failedAt].errno, snap, plan, callName(ops[failedAt].nr));
    const undoFailed = reply.undoResults.filter((r) => r.errno !== 0).length;
    if (undoFailed === 0) throw err;
    throw withUndoFailure(err, `${undoFailed} of the ${reply.undoResults.length} undo call(s) in the target failed (errno ${reply.undoResults.find((r) => r.errno !== 0)!.errno})`, []);
  }
  opts.changed?.();
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
      const { reply } = await holdingTarget(() =>
        runInTarget(snap.ref.pid, snap.mappings, ops, { startTime: snap.ref.startTime, checkSeccomp: snap.status.seccomp === 2, suspendSeccomp: opts.suspendSeccomp }),
      );
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

async function applyPlan(snap: Snapshot, plan: Plan, action: ActionReport, opts: ApplyOptions = {}): Promise<void> {
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

/**
 * A run stopped early (EINTR from applyPlan): the report of what the kernel shows now, with
 * the reason; never a bare error, since what stays locked is what the operator must know.
 */
async function interruptedResult(ref: ProcessRef, spec: SelectionSpec, action: ActionReport, warnings: string[], err: LockError): Promise<ProcessResult> {
  const after = await snapshot(ref);
  return { ...processReport(after, spec), outcome: "interrupted", action, warnings, error: err.toJSON() };
}

function isStop(err: unknown): err is LockError {
  return err instanceof LockError && err.code === "EINTR";
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
    return { ...processReport(snap, spec), outcome: "done", action, warnings };
  }
  let raisedNow: MemlockLimit | undefined;
  if (newLimit) {
    stopPoint(ref.pid);
    const prior = await readLimitRecord(ref, warnings);
    const previous = setLimit(ref, newLimit);
    changed();
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
    await applyPlan(snap, plan, action, { suspendSeccomp: req.allowSeccompSuspend, maxPauseMs: req.maxPauseMs, keepOnInterrupt: req.keepOnInterrupt, changed });
  } catch (err) {
    // Every failure path leaves the target as it was, its limit included (a stopped lock
    // that keeps its chunks keeps the limit they need).
    const keptSome = isStop(err) && action.interrupted?.undone === false && action.interrupted.sessionsDone > 0;
    if (raisedNow && !keptSome) {
      setLimit(ref, raisedNow);
      await removeLimitRecord(ref);
      action.limitRestored = { from: action.limitRaised!.to, to: limitReport(raisedNow) };
    }
    if (isStop(err)) return interruptedResult(ref, spec, action, warnings, err);
    throw err;
  }
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

/** A dry run of lock: what would change, how many bytes, what limit it needs. */
export async function plan(req: LockRequest): Promise<HostReport<ProcessResult>> {
  return lock({ ...req, dryRun: true });
}

export async function lock(req: LockRequest): Promise<HostReport<ProcessResult>> {
  const refs = await resolve(req);
  const processes = await changingTarget((changed) =>
    perProcess(refs, (ref) => (req.dryRun ? lockOne(req, ref, changed) : serialised(ref, "lock", () => lockOne(req, ref, changed))), failedResult),
  );
  return { host: os.hostname(), ...(req.dryRun ? { dryRun: true } : {}), processes, summary: summaryOf(processes) };
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

export async function unlock(req: UnlockRequest): Promise<HostReport<ProcessResult>> {
  const refs = await resolve(req);
  const processes = await changingTarget((changed) =>
    perProcess(refs, (ref) => (req.dryRun ? unlockOne(req, ref, changed) : serialised(ref, "unlock", () => unlockOne(req, ref, changed))), failedResult),
  );
  return { host: os.hostname(), ...(req.dryRun ? { dryRun: true } : {}), processes, summary: summaryOf(processes) };
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
  checks.push({ check: "method", ok: true, detail: methodDetail(lockPlan) });
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

/** Which kind of lock a selection does, and what the kernel will hold afterwards (issue 15). */
function methodDetail(plan: Plan): string {
  const sel = `${plan.selected.length} accessible mapping(s), ${formatBytes(plan.selected.reduce((a, m) => a + m.size, 0))}`;
  if (!plan.whole) return `per-mapping mlock2 of ${sel}; PROT_NONE reservations stay unlocked; VmLck after: ${formatBytes(plan.vmLckAfter)}`;
  const reserved = plan.reserved.reduce((a, m) => a + m.size, 0);
  return (
    `mlockall(MCL_CURRENT): ${sel}, and the kernel also marks ${plan.reserved.length} PROT_NONE reservation(s), ${formatBytes(reserved)}, locked ` +
    `(VmLck after: ${formatBytes(plan.vmLckAfter)}); memory made accessible there later is locked at once, as with --future; ` +
    `--all-accessible locks the accessible mappings only`
  );
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
