// Every transport operation has one deadline (RunOptions.timeoutMs, dialing included):
// each step waits only for what is left of it.
import { TransportError } from "./types";

export function timeLeft(deadline: number): number {
  return Math.max(0, deadline - Date.now());
}

export function timedOut(where: string, doing: string, ms: number): TransportError {
  return new TransportError({ code: "ETIMEDOUT", where, message: `${doing} did not finish within the deadline (${ms} ms)` });
}
