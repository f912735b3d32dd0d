// Timestamps of the provider's steps, for performance work only: with LOCKMEM_TRACE=<file>
// in the environment of the Pulumi run, every step appends one line (ms since the epoch,
// pid, event, details) to that file. Off by default; never carries a secret (callers pass
// hosts, pids and ops only).
import * as fs from "fs";

const file = process.env.LOCKMEM_TRACE;

export function trace(event: string, detail = ""): void {
  if (!file) return;
  fs.appendFileSync(file, `${(performance.timeOrigin + performance.now()).toFixed(1)} ${process.pid} ${event} ${detail}\n`);
}
