// The JSON shapes of the host library: what each operation takes (requests) and what it
// returns (reports). Bigints are rendered as decimal strings, so the agent protocol is a
// thin wrapper over them.
import type { LockError } from "../errors";
import type { StopReason } from "../interrupt";
import type { SelectionSpec, TargetSpec } from "../types";

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
