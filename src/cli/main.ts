// `lockmem`: the command line over the host library. Exit codes (README "Exit codes"):
// 0 all done, 1 none done (failed), 2 bad usage, 3 some done and some failed,
// 128+N stopped by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM; 141 output closed).
//
// flags.ts: the flags and what they become; output.ts: what is printed; stop.ts: signals
// and a closed output.
import { Command, CommanderError } from "commander";
import * as api from "../api";
import { agentMain, agentServe, agentVersion } from "../agent/server";
import { LockError } from "../errors";
import { holdingTarget, stopExitCode, stopRequested } from "../interrupt";
import { recoverInterrupted } from "../journal";
import { CommonFlags, maxPauseOf, pidOf, selectionOf, targetCommand, targetOf } from "./flags";
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

function addStatus(program: Command): void {
  const status = targetCommand(program, "status", "show every mapping and its lock state").option("--json", "one JSON object on stdout");
  status.action(async (flags: CommonFlags) => {
    const report = await api.status({ target: targetOf(flags), mappings: selectionOf(flags) });
    emit(flags.json === true, report, () => {
      const out: string[] = [];
      report.processes.forEach((p) => printProcess(p, out));
      return out;
    });
  });
}

function addLock(program: Command): void {
  const lock = targetCommand(program, "lock", "lock the selected mappings (default r-x,rwx)")
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
    process.exitCode = exitCodeOf(report.processes);
  });
}

function addUnlock(program: Command): void {
  const unlock = targetCommand(program, "unlock", "unlock the selected mappings (--all: everything)")
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
    process.exitCode = exitCodeOf(report.processes);
  });
}

function addDoctor(program: Command): void {
  const doctor = targetCommand(program, "doctor", "diagnose what would stop a lock (like ppriv -D)").option("--json", "one JSON object on stdout");
  doctor.action(async (flags: CommonFlags) => {
    const report = await api.doctor({ target: targetOf(flags), mappings: selectionOf(flags) });
    emit(flags.json === true, report, () => {
      const out: string[] = [];
      printDoctor(report, out);
      return out;
    });
    if (report.processes.some((p) => !p.ok)) process.exitCode = EXIT_FAILED;
  });
}

function addRecover(program: Command): void {
  program
    .command("recover")
    .description("finish or undo injections that a killed lockmem left behind (every lock/unlock also does this first)")
    .option("--pid <pid>", "only this process")
    .option("--json", "one JSON object on stdout")
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
