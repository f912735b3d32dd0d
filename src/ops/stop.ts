// A run asked to stop (interrupt.ts: a signal, a closed output) stops only where no target is
// held; these are the points where it does, and how the error that says so reads.
import { LockError } from "../errors";
import { StopReason, stopRequested } from "../interrupt";

export function stopText(reason: StopReason): string {
  return reason === "EPIPE" ? "its output closing (EPIPE: nobody reads it any more)" : reason;
}

/** A point where no target is held: a run asked to stop stops here (EINTR). */
export function stopPoint(pid: number): void {
  const reason = stopRequested();
  if (reason) throw new LockError({ code: "EINTR", pid, stage: reason, message: `stopped by ${stopText(reason)}` });
}

export function isStop(err: unknown): err is LockError {
  return err instanceof LockError && err.code === "EINTR";
}
