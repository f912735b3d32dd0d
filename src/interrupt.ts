// Stopping a run early (issue 15): SIGINT, SIGTERM, SIGHUP, or an output nobody reads any
// more (EPIPE: an orphaned run). The process may end at once while it holds no target and
// has changed nothing; otherwise the operations stop at their next safe point (between two
// ptrace sessions, between two processes), undo or keep what they did, and report it.
// A session in progress is never cut: dying with our registers in the target would harm it.

export type StopReason = "SIGINT" | "SIGTERM" | "SIGHUP" | "EPIPE";

/** The documented exit code of a run stopped by `reason`: 128 + the signal number (EPIPE as SIGPIPE). */
export function stopExitCode(reason: StopReason): number {
  return 128 + { SIGHUP: 1, SIGINT: 2, SIGPIPE: 13, EPIPE: 13, SIGTERM: 15 }[reason];
}

let requested: StopReason | undefined;
let held = 0;
let changing = 0;

export function requestStop(reason: StopReason): void {
  requested ??= reason;
}

/** Why the run was asked to stop, if it was. */
export function stopRequested(): StopReason | undefined {
  return requested;
}

/** For tests of the library in one process: forget an earlier request. */
export function clearStopRequest(): void {
  requested = undefined;
}

/**
 * True while ending the process now would harm a target or lose a change it made: a ptrace
 * session holds a target, or an operation has changed a target and not reported it yet.
 */
export function mustFinish(): boolean {
  return held > 0 || changing > 0;
}

/** Runs one ptrace session (or recovery) that holds a target. */
export async function holdingTarget<T>(work: () => Promise<T>): Promise<T> {
  held++;
  try {
    return await work();
  } finally {
    held--;
  }
}

/** One operation on one process: `changed()` once it has changed the target, until it returns. */
export async function changingTarget<T>(work: (changed: () => void) => Promise<T>): Promise<T> {
  let marked = false;
  const changed = (): void => {
    if (!marked) {
      marked = true;
      changing++;
    }
  };
  try {
    return await work(changed);
  } finally {
    if (marked) changing--;
  }
}
