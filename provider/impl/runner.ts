// Sends agent requests for one resource through the transport its connection chooses
// (provider/transport: transportFor), which runs the agent installed there (install
// "never") or deploys this package's agent first (install "auto").
import { AgentRequest, PROTOCOL_VERSION } from "../../src/agent/protocol";
import { LockError } from "../../src/errors";
import { transportFor } from "../transport";
import { TransportError, resultOf } from "../transport/types";
import { ProviderInputs } from "./state";

/** Request without the protocol fields: the runner adds them. */
export type AgentCall = AgentRequest extends unknown ? (AgentRequest extends infer R ? (R extends AgentRequest ? Omit<R, "v"> : never) : never) : never;

export interface AgentRunner {
  /** "local" or "ssh root@db1:22", for messages (never holds a secret). */
  readonly where: string;
  /** The result of an ok reply; an error reply is thrown as LockError, a failure to reach the agent as TransportError/DeployError. */
  call<T>(request: AgentCall, timeoutMs: number): Promise<T>;
}

export function runnerFor(inputs: ProviderInputs): AgentRunner {
  const kind = transportFor(inputs.connection);
  const where = kind.where();
  const transport = kind.open(inputs.agent);
  return {
    where,
    async call<T>(request: AgentCall, timeoutMs: number): Promise<T> {
      const reply = await transport.run({ ...request, v: PROTOCOL_VERSION } as AgentRequest, { timeoutMs });
      return resultOf<T>(reply, transport.where);
    },
  };
}

/** An error a resource operation reports: where, what, and the hint; never a credential. */
export function describeError(err: unknown, where: string): string {
  if (err instanceof LockError) {
    const text = err.message.startsWith(where) ? err.message : `${where}: ${err.message}`;
    return err.hint ? `${text} (${err.hint})` : text;
  }
  if (err instanceof TransportError) return err.hint ? `${err.message} (${err.hint})` : err.message;
  return err instanceof Error ? err.message : String(err);
}
