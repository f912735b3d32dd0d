// What the command line prints: the reports of status, lock, unlock, doctor as text (JSON
// with --json), the processes that were not done on stderr, and errors.
import * as api from "../api";
import { LockError } from "../errors";
import { formatBytes, formatMappingsTable } from "../format";
import { requestStop, stopRequested } from "../interrupt";
import { Mapping, MappingKind } from "../types";

/** The report mapping back in the shape the table formatter takes. */
function asMapping(m: api.MappingReport): Mapping {
  return {
    start: BigInt("0x" + m.address),
    end: BigInt("0x" + m.end),
    perms: m.mode,
    offset: 0n,
    dev: "",
    inode: 0,
    path: m.mapping === "[ anon ]" ? "" : m.mapping,
    kind: m.kind as MappingKind,
    size: m.size,
    rss: m.rss,
    anonymous: m.anonymous,
    locked: m.locked,
    vmFlags: [...(m.vmLocked ? ["lo"] : []), ...(m.onFault ? ["lf"] : [])],
  };
}

function noteOf(m: api.MappingReport): string {
  const state = m.vmLocked ? (m.onFault ? "locked-on-fault" : "locked") : m.lockable ? "" : "not-lockable";
  return m.selected ? `*${state}` : state;
}

export function printProcess(p: api.ProcessReport, out: string[]): void {
  out.push(`${p.pid}:   ${p.cmdline || `[${p.comm}]`}`);
  for (const d of p.heldByDeadRun ?? []) {
    out.push(`  warning: held by a lockmem run that died mid-session (thread ${d.tid}${d.owner ? `, lockmem pid ${d.owner}` : ""}${d.since ? `, since ${d.since}` : ""}); state ${p.state}; \`lockmem recover --pid ${p.pid}\` finishes it now`);
  }
  const byAddress = new Map(p.mappings.map((m) => [m.address, m]));
  out.push(
    formatMappingsTable(p.mappings.map(asMapping), {
      noteHeader: "Lock",
      note: (m) => noteOf(byAddress.get(m.start.toString(16)) as api.MappingReport),
    }).trimEnd(),
  );
  out.push(
    `VmLck ${formatBytes(p.vmLck)}, RLIMIT_MEMLOCK ${p.memlockLimit.soft === "unlimited" ? "unlimited" : formatBytes(BigInt(p.memlockLimit.soft))}` +
      ` (hard ${p.memlockLimit.hard === "unlimited" ? "unlimited" : formatBytes(BigInt(p.memlockLimit.hard))}), CAP_IPC_LOCK ${p.capIpcLock ? "yes" : "no"}`,
  );
  if (p.selection) {
    const s = p.selection;
    out.push(`selection (* above): ${s.mappings} mappings, ${formatBytes(s.bytes)}; locked ${s.lockedMappings} (${formatBytes(s.lockedBytes)})${s.inSync ? "" : `, not locked: ${s.unlocked.length}`}`);
  }
}

function printAction(p: api.ProcessResult, dryRun: boolean, out: string[]): void {
  const a = p.action;
  if (!a) return;
  const vmLck = dryRun ? `VmLck would be ${formatBytes(a.vmLckAfter)}` : `VmLck ${formatBytes(p.vmLck)}`;
  if (a.interrupted) {
    const s = p.selection;
    out.push(
      `${p.pid}: ${a.kind} stopped by ${a.interrupted.reason} after ${a.interrupted.sessionsDone} session(s), ${a.interrupted.sessionsDone === 0 ? "before any change" : a.interrupted.undone ? "undone" : "what was done is kept"}; ` +
        `now locked: ${s ? `${s.lockedMappings} of ${s.mappings} selected mapping(s), ${formatBytes(s.lockedBytes)}; ` : ""}${vmLck}`,
    );
  } else {
    const verb = a.kind === "lock" ? (dryRun ? "would lock" : "locked") : dryRun ? "would unlock" : "unlocked";
    out.push(
      `${p.pid}: ${verb} ${a.changedMappings} mapping(s), ${formatBytes(a.changedBytes)} (${a.method}); ${a.unchangedMappings} already ${a.kind === "lock" ? "locked" : "unlocked"}` +
        (a.kind === "lock" ? `; ${formatBytes(a.residentBytes)} to become resident` : "") +
        `; ${vmLck}`,
    );
  }
  for (const n of a.notLockable) out.push(`  not lockable: ${n.address} ${n.mapping}: ${n.reason}`);
  if (a.limitRaised) out.push(`  RLIMIT_MEMLOCK ${dryRun ? "would be raised" : "raised"}: ${a.limitRaised.from.soft} -> ${a.limitRaised.to.soft} bytes (restored on unlock)`);
  if (a.limitRestored) out.push(`  RLIMIT_MEMLOCK restored: ${a.limitRestored.from.soft} -> ${a.limitRestored.to.soft} bytes`);
  if (a.pauseUs !== undefined) {
    const sessions = (a.sessions ?? 1) > 1 ? ` in ${a.sessions} sessions, longest` : "";
    out.push(`  target held${sessions} ${a.pauseUs} us (thread ${a.thread?.tid}, ${a.syscalls} syscall(s) planned)`);
  }
  for (const w of p.warnings) out.push(`  warning: ${w}`);
}

const PROBLEM_LABEL: Record<api.Outcome, string> = {
  done: "done",
  failed: "failed",
  gone: "gone (exited during the run; not counted as a failure)",
  interrupted: "stopped",
  skipped: "not started",
};

/** A process that was not done as asked: on stderr, naming the pid and the reason (issue 15). */
function printProblem(p: api.ProcessResult, err: string[]): void {
  if (!p.error) return;
  err.push(`lockmem: ${p.pid} (${p.comm}): ${PROBLEM_LABEL[p.outcome]}: ${p.error.message}`);
  if (p.error.hint && p.outcome !== "gone") err.push(`lockmem: ${p.pid}: hint: ${p.error.hint}`);
}

export function printDoctor(report: api.HostReport<api.DoctorProcess>, out: string[]): void {
  for (const p of report.processes) {
    for (const c of p.checks) {
      out.push(`lockmem[${p.pid}]: ${c.ok ? "ok     " : "MISSING"} ${c.check}: ${c.detail}`);
      if (c.hint) out.push(`lockmem[${p.pid}]:         fix: ${c.hint}`);
    }
    out.push(`lockmem[${p.pid}]: ${p.ok ? "can be locked" : "cannot be locked as is"}`);
  }
}

/** The report of a lock or unlock: what was done on stdout, what was not on stderr (main.ts sets the exit code). */
export function emitActions(report: api.HostReport<api.ProcessResult>, flags: { json?: boolean; dryRun?: boolean }): void {
  const json = flags.json === true;
  const out: string[] = [];
  const err: string[] = [];
  for (const p of report.processes) {
    if (p.outcome === "done" || p.outcome === "interrupted") printAction(p, flags.dryRun === true, out);
    printProblem(p, err);
  }
  if (json) write(process.stdout, JSON.stringify(report, null, 2) + "\n");
  else if (out.length > 0) write(process.stdout, out.join("\n") + "\n");
  if (!json && err.length > 0) write(process.stderr, err.join("\n") + "\n");
  const stop = stopRequested();
  if (stop && report.processes.every((p) => p.outcome === "done" || p.outcome === "gone")) {
    write(process.stderr, `lockmem: ${stop} came after the work was done: nothing was stopped\n`);
  }
}

/** JSON output: bigints never reach here (the library renders them as strings). */
export function emit(json: boolean, value: unknown, human: () => string[]): void {
  const lines = json ? [JSON.stringify(value, null, 2)] : human();
  if (lines.length > 0) write(process.stdout, lines.join("\n") + "\n");
}

/** An error: as `{ ok: false, error }` on stdout with --json, else its message (and hint) on stderr. */
export function printError(e: LockError, json: boolean): void {
  if (json) {
    write(process.stdout, JSON.stringify({ ok: false, error: e.toJSON() }, null, 2) + "\n");
  } else {
    write(process.stderr, `lockmem: ${e.message}\n`);
    if (e.hint) write(process.stderr, `lockmem: hint: ${e.hint}\n`);
  }
}

/** A write whose failure (EPIPE: nobody reads) is a stop request, never a crash (see installStopHandlers in stop.ts). */
export function write(stream: NodeJS.WriteStream, text: string): void {
  try {
    stream.write(text);
  } catch {
    requestStop("EPIPE");
  }
}
