// Building the reports (types.ts) from what lockmem read (a snapshot) and what it plans to do
// (a plan): the form every operation returns, so the agent protocol is a thin wrapper.
import { native } from "../native";
import { Plan } from "../plan";
import { MemlockLimit, RLIM_INFINITY } from "../proc/limits";
import { hasCapIpcLock } from "../proc/status";
import { isLocked, isLockOnFault, notLockableReason, selectMappings } from "../select";
import { Mapping, SelectionSpec } from "../types";
import { Snapshot } from "./snapshot";
import { ActionReport, LimitReport, MappingReport, ProcessReport, SelectionSummary } from "./types";

function limitText(v: bigint): string {
  return v === RLIM_INFINITY ? "unlimited" : v.toString();
}

export function limitReport(l: MemlockLimit): LimitReport {
  return { soft: limitText(l.soft), hard: limitText(l.hard) };
}

export function hex(v: bigint): string {
  return v.toString(16);
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

export function processReport(snap: Snapshot, spec?: SelectionSpec): ProcessReport {
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

export function actionReport(plan: Plan): ActionReport {
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
