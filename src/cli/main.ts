// `lockmem`: the command line over the host library. Exit codes (README "Exit codes"):
// 0 all done, 1 none done (failed), 2 bad usage, 3 some done and some failed,
// 128+N stopped by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM; 141 output closed).
import { Command, CommanderError, Option } from "commander";
import * as api from "../api";
import { agentMain, agentServe } from "../agent/server";
import { LockError } from "../errors";
import { holdingTarget, mustFinish, requestStop, StopReason, stopExitCode, stopRequested } from "../interrupt";
import { recoverInterrupted } from "../journal";
import { formatBytes, formatMappingsTable } from "../format";
import { flagName, SELECTOR_FLAG_LIST, SelectorFlagName, TARGET_SELECTORS } from "../target-selectors";
import { Mapping, MappingKind, SelectionSpec, TargetSpec } from "../types";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_PARTIAL = 3;

/** Commander's values: one per selector flag (by its name without "--"), plus --all-matches. */
type TargetFlags = { [F in SelectorFlagName]?: string } & { allMatches?: boolean };

interface SelectionFlags {
  perms?: string;
  path?: string[];
  kind?: string;
  all?: boolean;
  allAccessible?: boolean;
}

type CommonFlags = TargetFlags & SelectionFlags & {
  json?: boolean;
  future?: boolean;
  onFault?: boolean;
  raiseLimit?: boolean;
  dryRun?: boolean;
  allowSeccompSuspend?: boolean;
  maxPauseMs?: string;
  keepOnInterrupt?: boolean;
};

function maxPauseOf(flags: CommonFlags): number | undefined {
  if (flags.maxPauseMs === undefined) return undefined;
  const v = Number(flags.maxPauseMs);
  if (!Number.isFinite(v) || v < 0.1 || v > 60000) {
    throw new LockError({ code: "EUSAGE", field: "--max-pause-ms", message: `--max-pause-ms: ${JSON.stringify(flags.maxPauseMs)} is not a number of milliseconds between 0.1 and 60000` });
  }
  return v;
}

function list(value: string): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function targetOf(flags: TargetFlags): TargetSpec {
  const spec: TargetSpec = {};
  for (const s of TARGET_SELECTORS) {
    const value = flags[flagName(s)];
    if (value === undefined) continue;
    if (s.key === "pid") {
      if (!/^\d+$/.test(value)) throw new LockError({ code: "EUSAGE", field: s.flag, message: `${s.flag}: ${JSON.stringify(value)} is not a pid` });
      spec.pid = Number(value);
    } else {
      spec[s.key] = value;
    }
  }
  if (flags.allMatches) spec.match = "all";
  if (Object.keys(spec).filter((k) => k !== "match").length === 0) {
    throw new LockError({ code: "EUSAGE", field: "target", message: `no target: give one of ${SELECTOR_FLAG_LIST}` });
  }
  return spec;
}

function selectionOf(flags: SelectionFlags): SelectionSpec | undefined {
  const spec: SelectionSpec = {};
  if (flags.perms !== undefined) spec.permissions = list(flags.perms);
  if (flags.path !== undefined && flags.path.length > 0) spec.paths = flags.path;
  if (flags.kind !== undefined) spec.kinds = list(flags.kind) as MappingKind[];
  if (flags.all) spec.all = true;
  if (flags.allAccessible) spec.allAccessible = true;
  return Object.keys(spec).length === 0 ? undefined : spec;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function addTargetOptions(cmd: Command): Command {
  for (const s of TARGET_SELECTORS) cmd.option(`${s.flag} ${s.flagArg}`, s.help);
  return cmd.option("--all-matches", "act on every matching process (otherwise several matches are an error)");
}

function addSelectionOptions(cmd: Command): Command {
  return cmd
    .option("--perms <list>", "permissions, e.g. r-x,rwx (default r-x,rwx)")
    .option("--path <glob>", "mapping path glob (repeatable)", collect)
    .option("--kind <list>", "kinds: file,anon,heap,stack,shmem")
    .option("--all", "every mapping (mlockall / munlockall); the kernel marks PROT_NONE reservations locked too")
    .option("--all-accessible", "every accessible mapping, one mlock2 / munlock per range (reservations stay unlocked)");
}

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

function printProcess(p: api.ProcessReport, out: string[]): void {
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

/**
 * 0 all done; 3 some done, some failed; 1 none done (every process failed, or every one
 * exited during the run); 128+N when a stop request (signal N, or EPIPE as 141) stopped or
 * skipped work. A process that is gone is neither done nor failed.
 */
export function exitCodeOf(processes: api.ProcessResult[]): number {
  const stop = stopRequested();
  if (stop && processes.some((p) => p.outcome === "interrupted" || p.outcome === "skipped")) return stopExitCode(stop);
  const done = processes.filter((p) => p.outcome === "done").length;
  const failed = processes.filter((p) => p.outcome !== "done" && p.outcome !== "gone").length;
  if (failed === 0) return done > 0 ? EXIT_OK : EXIT_FAILED;
  return done > 0 ? EXIT_PARTIAL : EXIT_FAILED;
}

function printDoctor(report: api.HostReport<api.DoctorProcess>, out: string[]): void {
  for (const p of report.processes) {
    for (const c of p.checks) {
      out.push(`lockmem[${p.pid}]: ${c.ok ? "ok     " : "MISSING"} ${c.check}: ${c.detail}`);
      if (c.hint) out.push(`lockmem[${p.pid}]:         fix: ${c.hint}`);
    }
    out.push(`lockmem[${p.pid}]: ${p.ok ? "can be locked" : "cannot be locked as is"}`);
  }
}

/** The report of a lock or unlock: what was done on stdout, what was not on stderr; the exit code. */
function emitActions(report: api.HostReport<api.ProcessResult>, flags: CommonFlags): void {
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
  process.exitCode = exitCodeOf(report.processes);
}

/** JSON output: bigints never reach here (the library renders them as strings). */
function emit(json: boolean, value: unknown, human: () => string[]): void {
  const lines = json ? [JSON.stringify(value, null, 2)] : human();
  if (lines.length > 0) write(process.stdout, lines.join("\n") + "\n");
}

/** A write whose failure (EPIPE: nobody reads) is a stop request, never a crash (see installStopHandlers). */
function write(stream: NodeJS.WriteStream, text: string): void {
  try {
    stream.write(text);
  } catch {
    requestStop("EPIPE");
  }
}

// SIGINT/SIGTERM/SIGHUP, or an output nobody reads any more (EPIPE, an orphaned run): end at
// once while no target is held and nothing has changed; otherwise the operation stops at
// its next safe point (between two ptrace sessions), undoes or keeps what it did, and its
// report is printed before the exit (issue 15: SIGTERM used to run every remaining chunk,
// then exit 143 without a report; a closed stderr crashed a run between chunks). Dying in
// a session would leave the target on our registers, so a session is never cut.
let exitTimer: NodeJS.Timeout | undefined;

function onStop(reason: StopReason): void {
  const first = stopRequested() === undefined;
  requestStop(reason);
  const code = stopExitCode(stopRequested()!);
  if (!mustFinish()) process.exit(code);
  if (first && reason !== "EPIPE") write(process.stderr, `lockmem: ${reason} received: stopping at the next point where no target is held, then reporting what stays locked\n`);
  // The agent serves on after a request; the CLI returns from main() on its own.
  exitTimer ??= setInterval(() => {
    // main() may have set the code already: a signal that came after the work was done.
    if (!mustFinish()) process.exit(typeof process.exitCode === "number" ? process.exitCode : code);
  }, 10);
}

function installStopHandlers(signals: readonly NodeJS.Signals[]): void {
  for (const sig of signals) process.on(sig, () => onStop(sig as StopReason));
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") onStop("EPIPE");
    });
  }
}

function reportError(err: unknown, json: boolean): number {
  const e = err instanceof LockError ? err : new LockError({ code: "EINTERNAL", message: err instanceof Error ? err.message : String(err) });
  if (json) {
    write(process.stdout, JSON.stringify({ ok: false, error: e.toJSON() }, null, 2) + "\n");
  } else {
    write(process.stderr, `lockmem: ${e.message}\n`);
    if (e.hint) write(process.stderr, `lockmem: hint: ${e.hint}\n`);
  }
  const stop = stopRequested();
  if (e.code === "EINTR" && stop) return stopExitCode(stop);
  return e.code === "EUSAGE" ? EXIT_USAGE : EXIT_FAILED;
}

export function buildProgram(): Command {
  const program = new Command("lockmem")
    .description("Lock the memory of a running process in RAM (mlock through ptrace), and report it like pmap -X.")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  const status = addSelectionOptions(addTargetOptions(program.command("status").description("show every mapping and its lock state")))
    .option("--json", "one JSON object on stdout");
  status.action(async (flags: CommonFlags) => {
    const report = await api.status({ target: targetOf(flags), mappings: selectionOf(flags) });
    emit(flags.json === true, report, () => {
      const out: string[] = [];
      report.processes.forEach((p) => printProcess(p, out));
      return out;
    });
  });

  const lock = addSelectionOptions(addTargetOptions(program.command("lock").description("lock the selected mappings (default r-x,rwx)")))
    .option("--future", "also lock mappings created later (MCL_FUTURE)")
    .option("--on-fault", "lock pages only as they become resident (MLOCK_ONFAULT)")
    .option("--raise-limit", "raise the target's RLIMIT_MEMLOCK as needed (restored on unlock)")
    .option("--max-pause-ms <ms>", "split the work so that no single stop of the target exceeds this")
    .option("--keep-on-interrupt", "stopped early (signal, closed output): keep what is locked instead of undoing it")
    .option("--allow-seccomp-suspend", "suspend the target's seccomp filter for lockmem's calls only")
    .option("--dry-run", "show the plan, change nothing")
    .option("--json", "one JSON object on stdout");
  lock.action(async (flags: CommonFlags) => {
    const report = await api.lock({
      target: targetOf(flags),
      mappings: selectionOf(flags),
      future: flags.future,
      onFault: flags.onFault,
      raiseMemlockLimit: flags.raiseLimit,
      maxPauseMs: maxPauseOf(flags),
      keepOnInterrupt: flags.keepOnInterrupt,
      allowSeccompSuspend: flags.allowSeccompSuspend,
      dryRun: flags.dryRun,
    });
    emitActions(report, flags);
  });

  const unlock = addSelectionOptions(addTargetOptions(program.command("unlock").description("unlock the selected mappings (--all: everything)")))
    .option("--future", "also clear MCL_FUTURE")
    .option("--max-pause-ms <ms>", "split the work so that no single stop of the target exceeds this")
    .option("--allow-seccomp-suspend", "suspend the target's seccomp filter for lockmem's calls only")
    .option("--dry-run", "show the plan, change nothing")
    .option("--json", "one JSON object on stdout");
  unlock.action(async (flags: CommonFlags) => {
    const report = await api.unlock({
      target: targetOf(flags),
      mappings: selectionOf(flags),
      future: flags.future,
      maxPauseMs: maxPauseOf(flags),
      allowSeccompSuspend: flags.allowSeccompSuspend,
      dryRun: flags.dryRun,
    });
    emitActions(report, flags);
  });

  const doctor = addSelectionOptions(addTargetOptions(program.command("doctor").description("diagnose what would stop a lock (like ppriv -D)")))
    .option("--json", "one JSON object on stdout");
  doctor.action(async (flags: CommonFlags) => {
    const report = await api.doctor({ target: targetOf(flags), mappings: selectionOf(flags) });
    emit(flags.json === true, report, () => {
      const out: string[] = [];
      printDoctor(report, out);
      return out;
    });
    if (report.processes.some((p) => !p.ok)) process.exitCode = EXIT_FAILED;
  });

  program
    .command("recover")
    .description("finish or undo injections that a killed lockmem left behind (every lock/unlock also does this first)")
    .option("--pid <pid>", "only this process")
    .option("--json", "one JSON object on stdout")
    .action(async (flags: { pid?: string; json?: boolean }) => {
      if (flags.pid !== undefined && !/^\d+$/.test(flags.pid)) {
        throw new LockError({ code: "EUSAGE", field: "--pid", message: `--pid: ${JSON.stringify(flags.pid)} is not a pid` });
      }
      const results = await holdingTarget(() => recoverInterrupted(flags.pid === undefined ? undefined : Number(flags.pid)));
      emit(flags.json === true, { recovered: results }, () =>
        results.length === 0 ? ["nothing to recover"] : results.map((r) => `${r.pid}: ${r.outcome}: ${r.detail}`),
      );
    });

  program
    .command("agent")
    .description("serve one JSON request on stdin (used by the Pulumi provider over SSH)")
    .option("--serve", "serve one request per line until stdin ends")
    .action(async (flags: { serve?: boolean }) => {
      // Not held as a whole: the agent ends at once on a signal while it holds no target,
      // and each request stops at its next safe point (interrupt.ts).
      await (flags.serve ? agentServe() : agentMain());
    });

  program.addOption(new Option("--version", "print the version").hideHelp());
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // The agent ignores SIGHUP (server.ts): an SSH session that goes away closes its stdin,
  // which ends it once the request at hand is answered.
  installStopHandlers(argv[0] === "agent" ? ["SIGINT", "SIGTERM"] : ["SIGINT", "SIGTERM", "SIGHUP"]);
  const program = buildProgram();
  const json = argv.includes("--json");
  try {
    await program.parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.exitCode === 0) return EXIT_OK;
      return EXIT_USAGE;
    }
    return reportError(err, json);
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
