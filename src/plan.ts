// Planning: which system calls to run in the target, as plain data. No effects here.
import { MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, SyscallOp } from "./native";
import { isLocked, isLockOnFault, lockedByMlockall, selectMappings } from "./select";
import { Mapping, SelectionSpec } from "./types";

export interface SyscallNumbers {
  mlock2: number;
  munlock: number;
  mlockall: number;
  munlockall: number;
}

/** What the kernel will check and what we know about the target. */
export interface TargetFacts {
  mappings: Mapping[];
  /** Virtual bytes already locked (VmLck). */
  vmLck: number;
  /** Virtual size (VmSize): what mlockall(MCL_CURRENT) is checked against. */
  vmSize: number;
  /** With CAP_IPC_LOCK the kernel ignores RLIMIT_MEMLOCK. */
  capIpcLock: boolean;
}

export interface LockOptions {
  future?: boolean;
  onFault?: boolean;
}

export interface PlannedRange {
  start: bigint;
  end: bigint;
  mappings: Mapping[];
}

export interface Plan {
  kind: "lock" | "unlock";
  /** mlockall / munlockall rather than per-range calls. */
  whole: boolean;
  ops: SyscallOp[];
  /** Selected, lockable mappings. */
  selected: Mapping[];
  /** Selected mappings this plan changes. */
  changing: Mapping[];
  /** Selected mappings already in the wanted state. */
  unchanged: Mapping[];
  notLockable: { mapping: Mapping; reason: string }[];
  /** Virtual bytes that change state. */
  bytes: number;
  /** Bytes that will become resident (locking faults in what is not resident yet). */
  residentBytes: number;
  /**
   * PROT_NONE reservations (not locked yet) that mlockall(MCL_CURRENT) marks locked: pages
   * made accessible there later are locked at once. Empty for per-range plans.
   */
  reserved: Mapping[];
  /** VmLck the kernel will show afterwards (virtual bytes of locked VMAs), as planned. */
  vmLckAfter: number;
  /**
   * RLIMIT_MEMLOCK (bytes) the target needs for this plan when it lacks CAP_IPC_LOCK,
   * as the kernel computes it; 0 when no limit applies (unlock, or CAP_IPC_LOCK).
   */
  neededLimit: bigint;
}

/** Adjacent mappings merge into one range: one call instead of several. */
export function mergeAdjacent(mappings: Mapping[]): PlannedRange[] {
  const ranges: PlannedRange[] = [];
  for (const m of [...mappings].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))) {
    const last = ranges[ranges.length - 1];
    if (last && last.end === m.start) {
      last.end = m.end;
      last.mappings.push(m);
    } else {
      ranges.push({ start: m.start, end: m.end, mappings: [m] });
    }
  }
  return ranges;
}

function sum(mappings: Mapping[], f: (m: Mapping) => number): number {
  return mappings.reduce((acc, m) => acc + f(m), 0);
}

/** Whether a locked mapping is locked the way these options ask. */
function lockedAsWanted(m: Mapping, onFault: boolean): boolean {
  return isLocked(m) && isLockOnFault(m) === onFault;
}

export function planLock(facts: TargetFacts, selection: SelectionSpec, options: LockOptions, nr: SyscallNumbers): Plan {
  const onFault = options.onFault === true;
  const { selected, notLockable } = selectMappings(facts.mappings, selection);
  const changing = selected.filter((m) => !lockedAsWanted(m, onFault));
  const base = {
    kind: "lock" as const,
    selected,
    changing,
    unchanged: selected.filter((m) => lockedAsWanted(m, onFault)),
    notLockable,
    bytes: sum(changing, (m) => m.size),
    residentBytes: onFault ? 0 : sum(changing, (m) => Math.max(0, m.size - m.rss)),
  };
  if (selection.all === true) {
    const flags = MCL_CURRENT | (options.future ? MCL_FUTURE : 0) | (onFault ? MCL_ONFAULT : 0);
    return {
      ...base,
      whole: true,
      reserved: facts.mappings.filter((m) => lockedByMlockall(m) && !isLocked(m) && !selected.includes(m)),
      vmLckAfter: sum(facts.mappings.filter(lockedByMlockall), (m) => m.size),
      ops: [{ nr: nr.mlockall, args: [BigInt(flags)] }],
      // mm/mlock.c: mlockall(MCL_CURRENT) compares the whole VmSize with the limit.
      neededLimit: facts.capIpcLock ? 0n : BigInt(facts.vmSize),
    };
  }
  const ops: SyscallOp[] = mergeAdjacent(changing).map((r) => ({
    nr: nr.mlock2,
    args: [r.start, r.end - r.start, BigInt(onFault ? MLOCK_ONFAULT : 0)],
    // Only ranges that were not locked at all are unlocked again on failure; a range that
    // was locked the other way (on-fault or not) stays locked.
    undo: r.mappings.every((m) => !isLocked(m)) ? { nr: nr.munlock, args: [r.start, r.end - r.start] } : undefined,
  }));
  if (options.future) {
    // Last: mlockall(MCL_FUTURE) cannot be undone without munlockall, so it runs only once
    // everything before it succeeded.
    ops.push({ nr: nr.mlockall, args: [BigInt(MCL_FUTURE | (onFault ? MCL_ONFAULT : 0))] });
  }
  const vmLckAfter = facts.vmLck + sum(changing.filter((m) => !isLocked(m)), (m) => m.size);
  return {
    ...base,
    whole: false,
    reserved: [],
    vmLckAfter,
    ops,
    // mm/mlock.c (do_mlock): locked_vm + the new range must fit the limit.
    neededLimit: facts.capIpcLock ? 0n : BigInt(vmLckAfter),
  };
}

export interface UnlockOptions {
  /** Also clear MCL_FUTURE. */
  future?: boolean;
}

export function planUnlock(facts: TargetFacts, selection: SelectionSpec, options: UnlockOptions, nr: SyscallNumbers): Plan {
  const { selected, notLockable } = selectMappings(facts.mappings, selection);
  const changing = selected.filter((m) => isLocked(m));
  const unchanged = selected.filter((m) => !isLocked(m));
  const base = { kind: "unlock" as const, selected, changing, unchanged, notLockable, bytes: sum(changing, (m) => m.size), residentBytes: 0, neededLimit: 0n, reserved: [] };
  if (selection.all === true) {
    return { ...base, whole: true, vmLckAfter: 0, ops: [{ nr: nr.munlockall, args: [] }] };
  }
  const vmLckAfter = Math.max(0, facts.vmLck - base.bytes);
  if (options.future) {
    // Only munlockall clears MCL_FUTURE, and it unlocks everything: lock again what must
    // stay locked, the way it was locked.
    const changingSet = new Set(changing);
    const keep = facts.mappings.filter((m) => isLocked(m) && !changingSet.has(m));
    const relock: SyscallOp[] = [];
    for (const flag of [0, MLOCK_ONFAULT]) {
      const group = keep.filter((m) => isLockOnFault(m) === (flag === MLOCK_ONFAULT));
      for (const r of mergeAdjacent(group)) relock.push({ nr: nr.mlock2, args: [r.start, r.end - r.start, BigInt(flag)] });
    }
    return { ...base, whole: false, vmLckAfter, ops: [{ nr: nr.munlockall, args: [] }, ...relock] };
  }
  const ops: SyscallOp[] = mergeAdjacent(changing).map((r) => ({ nr: nr.munlock, args: [r.start, r.end - r.start] }));
  return { ...base, whole: false, vmLckAfter, ops };
}

/** A range call that can be cut into chunks: nr(start, len, ...extraArgs). */
export interface ChunkableRange {
  nr: number;
  start: bigint;
  end: bigint;
  extraArgs: bigint[];
  undoNr?: number;
}

/**
 * The plan as range calls that can be split (for bounded pauses) plus the calls that
 * cannot (mlockall/munlockall), which then run last and cheaply: for a whole-address-space
 * lock every lockable mapping is locked in chunks first, so the final mlockall finds
 * everything resident and locked already; for munlockall, everything is unlocked first.
 * An unlock that clears MCL_FUTURE (munlockall, then mlock2 of what stays) becomes: the
 * selection unlocked in chunks, munlockall, then `relock` in chunks, which must all run
 * (until then what stays is unlocked). Before, the relock ran first and munlockall last,
 * which left unlocked what had to stay locked.
 */
export function pauseBoundedSteps(plan: Plan, mappings: Mapping[], nr: SyscallNumbers): { ranges: ChunkableRange[]; finalOps: SyscallOp[]; relock: ChunkableRange[] } {
  const ranges: ChunkableRange[] = [];
  const finalOps: SyscallOp[] = [];
  if (plan.kind === "unlock" && !plan.whole && plan.ops[0]?.nr === nr.munlockall) {
    const relock = plan.ops.slice(1).map((op) => ({ nr: op.nr, start: op.args[0], end: op.args[0] + op.args[1], extraArgs: op.args.slice(2) }));
    for (const r of mergeAdjacent(plan.changing)) ranges.push({ nr: nr.munlock, start: r.start, end: r.end, extraArgs: [] });
    return { ranges, finalOps: [plan.ops[0]], relock };
  }
  for (const op of plan.ops) {
    if (op.nr === nr.mlock2) {
      ranges.push({ nr: op.nr, start: op.args[0], end: op.args[0] + op.args[1], extraArgs: op.args.slice(2), undoNr: op.undo?.nr });
    } else if (op.nr === nr.munlock) {
      ranges.push({ nr: op.nr, start: op.args[0], end: op.args[0] + op.args[1], extraArgs: [] });
    } else {
      finalOps.push(op);
    }
  }
  if (plan.whole && plan.kind === "lock") {
    const flags = BigInt(Number(plan.ops[0].args[0]) & MCL_ONFAULT ? MLOCK_ONFAULT : 0);
    for (const r of mergeAdjacent(plan.changing)) ranges.push({ nr: nr.mlock2, start: r.start, end: r.end, extraArgs: [flags], undoNr: nr.munlock });
  }
  if (plan.whole && plan.kind === "unlock") {
    const locked = mappings.filter((m) => isLocked(m) && !plan.notLockable.some((n) => n.mapping === m));
    for (const r of mergeAdjacent(locked)) ranges.push({ nr: nr.munlock, start: r.start, end: r.end, extraArgs: [] });
  }
  return { ranges, finalOps, relock: [] };
}
