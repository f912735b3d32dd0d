// SIGINT/SIGTERM/SIGHUP, or an output nobody reads any more (EPIPE, an orphaned run): end at
// once while no target is held and nothing has changed; otherwise the operation stops at
// its next safe point (between two ptrace sessions), undoes or keeps what it did, and its
// report is printed before the exit (issue 15: SIGTERM used to run every remaining chunk,
// then exit 143 without a report; a closed stderr crashed a run between chunks). Dying in
// a session would leave the target on our registers, so a session is never cut.
import { mustFinish, requestStop, StopReason, stopExitCode, stopRequested } from "../interrupt";
import { write } from "./output";

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

export function installStopHandlers(signals: readonly NodeJS.Signals[]): void {
  for (const sig of signals) process.on(sig, () => onStop(sig as StopReason));
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") onStop("EPIPE");
    });
  }
}
