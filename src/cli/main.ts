// `lockmem`: the command line over the host library. Exit codes (README "Exit codes"):
// 0 all done, 1 none done (failed), 2 bad usage, 3 some done and some failed,
// 128+N stopped by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM; 141 output closed).
//
// flags.ts: the flags and what they become; output.ts: what is printed; stop.ts: signals
// and a closed output.
import { Command, CommanderError } from "commander";
import * as api from "../api";
import { agentServe } from "../agent/serve";
import { agentMain, agentVersion } from "../agent/server";
import { LockError } from "../errors";
import { holdingTarget, stopExitCode, stopRequested } from "../interrupt";
import { recoverInterrupted } from "../journal";
import { CommonFlags, SHARED_OPTIONS, maxPauseOf, pidOf, selectionOf, targetCommand, targetOf, withOptions } from "./flags";
import { emit, emitActions, printDoctor, printError, printProcess } from "./output";
import { installStopHandlers } from "./stop";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_PARTIAL = 3;

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

function reportError(err: unknown, json: boolean): number {
  const e = err instanceof LockError ? err : new LockError({ code: "EINTERNAL", message: err instanceof Error ? err.message : String(err) });
  printError(e, json);
  const stop = stopRequested();
  if (e.code === "EINTR" && stop) return stopExitCode(stop);
  return e.code === "EUSAGE" ? EXIT_USAGE : EXIT_FAILED;
}

const { json: JSON_OPTION, maxPause, allowSeccompSuspend, dryRun } = SHARED_OPTIONS;

/** What lock and unlock both take from their flags. */
function changeOf(flags: CommonFlags): api.UnlockRequest {
  return {
    target: targetOf(flags),
    mappings: selectionOf(flags),
    future: flags.future,
    maxPauseMs: maxPauseOf(flags),
    allowSeccompSuspend: flags.allowSeccompSuspend,
    dryRun: flags.dryRun,
  };
}

/** Prints what a lock or unlock did and sets the exit code from it. */
function finishChange(report: api.HostReport<api.ProcessResult>, flags: CommonFlags): void {
  emitActions(report, flags);
  process.exitCode = exitCodeOf(report.processes);
}

/** A command that only reads (status, doctor): its report as text lines, or --json. */
function addReadCommand<R>(
  program: Command,
  [name, description]: [string, string],
  run: (req: api.StatusRequest) => Promise<R>,
  print: (report: R, out: string[]) => void,
  failed: (report: R) => boolean = () => false,
): void {
  withOptions(targetCommand(program, name, description), [JSON_OPTION]).action(async (flags: CommonFlags) => {
    const report = await run({ target: targetOf(flags), mappings: selectionOf(flags) });
    emit(flags.json === true, report, () => {
      const out: string[] = [];
      print(report, out);
      return out;
    });
    if (failed(report)) process.exitCode = EXIT_FAILED;
  });
}

function addStatus(program: Command): void {
  addReadCommand(program, ["status", "show every mapping and its lock state"], (req) => api.status(req), (report, out) => report.processes.forEach((p) => printProcess(p, out)));
}

function addLock(program: Command): void {
  const lock = withOptions(targetCommand(program, "lock", "lock the selected mappings (default r-x,rwx)"), [
    ["--future", "also lock mappings created later (MCL_FUTURE)"],
    ["--on-fault", "lock pages only as they become resident (MLOCK_ONFAULT)"],
    ["--raise-limit", "raise the target's RLIMIT_MEMLOCK as needed (restored on unlock)"],
    maxPause,
    ["--keep-on-interrupt", "stopped early (signal, closed output): keep what is locked instead of undoing it"],
    allowSeccompSuspend,
    dryRun,
    JSON_OPTION,
  ]);
  lock.action(async (flags: CommonFlags) => {
    const report = await api.lock({ ...changeOf(flags), onFault: flags.onFault, raiseMemlockLimit: flags.raiseLimit, keepOnInterrupt: flags.keepOnInterrupt });
    finishChange(report, flags);
  });
}

function addUnlock(program: Command): void {
  const unlock = withOptions(targetCommand(program, "unlock", "unlock the selected mappings (--all: everything)"), [
    ["--future", "also clear MCL_FUTURE"],
    maxPause,
    allowSeccompSuspend,
    dryRun,
    JSON_OPTION,
  ]);
  unlock.action(async (flags: CommonFlags) => {
    finishChange(await api.unlock(changeOf(flags)), flags);
  });
}

function addDoctor(program: Command): void {
  addReadCommand(
    program,
    ["doctor", "diagnose what would stop a lock (like ppriv -D)"],
    (req) => api.doctor(req),
    (report, out) => printDoctor(report, out),
    (report) => report.processes.some((p) => !p.ok),
  );
}

function addRecover(program: Command): void {
  program
    .command("recover")
    .description("finish or undo injections that a killed lockmem left behind (every lock/unlock also does this first)")
    .option("--pid <pid>", "only this process")
    .option(...JSON_OPTION)
    .action(async (flags: { pid?: string; json?: boolean }) => {
      const pid = flags.pid === undefined ? undefined : pidOf("--pid", flags.pid);
      const results = await holdingTarget(() => recoverInterrupted(pid));
      emit(flags.json === true, { recovered: results }, () =>
        results.length === 0 ? ["nothing to recover"] : results.map((r) => `${r.pid}: ${r.outcome}: ${r.detail}`),
      );
    });
}

function addAgent(program: Command): void {
  program
    .command("agent")
    .description("serve one JSON request on stdin (used by the Pulumi provider over SSH)")
    .option("--serve", "serve one request per line until stdin ends")
    .action(async (flags: { serve?: boolean }) => {
      // Not held as a whole: the agent ends at once on a signal while it holds no target,
      // and each request stops at its next safe point (interrupt.ts).
      await (flags.serve ? agentServe() : agentMain());
    });
}

export function buildProgram(): Command {
  const program = new Command("lockmem")
    .description("Lock the memory of a running process in RAM (mlock through ptrace), and report it like pmap -X.")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const add of [addStatus, addLock, addUnlock, addDoctor, addRecover, addAgent]) add(program);
  program.version(agentVersion(), "--version", "print the version");
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
