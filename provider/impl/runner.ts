// Sends agent requests for one resource: through the local transport when there is no
// connection, over SSH otherwise, with the deployed agent (install "auto") or the one
// installed on the host (install "never", protocol version checked by the transport).
import * as path from "path";
import { AgentRequest, PROTOCOL_VERSION, VersionResult } from "../../src/agent/protocol";
import { LockError } from "../../src/errors";
import { nativeUnavailable } from "../../src/native";
import { packageRoot } from "../agent/bundle";
import { deployedHere, ensureAgent, isHashMismatch, presumedAgentCommand, supportedNode } from "../agent/deploy";
import { LocalTransport } from "../transport/local";
import { SshConnection, SshTransport } from "../transport/ssh";
import { Transport, TransportError, resultOf } from "../transport/types";
import { ProviderInputs } from "./state";
import { transportKind } from "../transport/kinds";

/** Request without the protocol fields: the runner adds them. */
export type AgentCall = AgentRequest extends unknown ? (AgentRequest extends infer R ? (R extends AgentRequest ? Omit<R, "v"> : never) : never) : never;

export interface AgentRunner {
  /** "local" or "ssh root@db1:22", for messages (never holds a secret). */
  readonly where: string;
  /** The result of an ok reply; an error reply is thrown as LockError, a failure to reach the agent as TransportError/DeployError. */
  call<T>(request: AgentCall, timeoutMs: number): Promise<T>;
}

function localTransport(inputs: ProviderInputs): Transport {
  if (inputs.agent?.install === "never") return new LocalTransport({ command: [inputs.agent.path ?? "lockmem", "agent"] });
  // This package's own agent, with the Node.js that runs the provider.
  return new LocalTransport({ command: [process.execPath, path.join(packageRoot(), "dist", "src", "agent", "main.js")] });
}

/** Failures to reach the host: the deployment path would only fail the same way, later. */
const UNREACHABLE = new Set(["ECONNECT", "EHOSTKEY", "EAUTH", "ETIMEDOUT", "EUSAGE"]);

/**
 * The deployed agent, started without a probe (presumedAgentCommand), ready for requests:
 * its version handshake is the first line on its session. Undefined when it does not run
 * as it should (not deployed yet, tampered, no suitable node): nothing but that handshake
 * ran, and the caller deploys. Unreachable hosts fail here as they would anywhere.
 */
async function presumedAgent(conn: SshConnection, dir: string | undefined, timeoutMs: number): Promise<SshTransport | undefined> {
  if (deployedHere(conn, dir)) return undefined;
  const command = presumedAgentCommand(conn, dir);
  if (!command) return undefined;
  const transport = new SshTransport(conn, { agentCommand: command, persistent: true });
  try {
    const reply = await transport.run({ v: PROTOCOL_VERSION, op: "version" }, { timeoutMs });
    return supportedNode(resultOf<VersionResult>(reply, transport.where).node) ? transport : undefined;
  } catch (e) {
    if (e instanceof TransportError && UNREACHABLE.has(e.code)) throw e;
    return undefined;
  }
}

export function runnerFor(inputs: ProviderInputs): AgentRunner {
  const where = transportKind(inputs.connection).where();
  const conn = inputs.connection;
  const send = async <T>(transport: Transport, request: AgentCall, timeoutMs: number): Promise<T> => {
    const reply = await transport.run({ ...request, v: PROTOCOL_VERSION } as AgentRequest, { timeoutMs });
    return resultOf<T>(reply, transport.where);
  };
  if (inputs.agent?.install === "never") {
    const agentPath = inputs.agent.path;
    const transport = conn ? new SshTransport({ ...conn, agentPath }) : localTransport(inputs);
    return {
      where,
      async call<T>(request: AgentCall, timeoutMs: number): Promise<T> {
        try {
          return await send<T>(transport, request, timeoutMs);
        } catch (e) {
          throw missingAgent(e, agentPath, conn !== undefined);
        }
      },
    };
  }
  if (!conn) {
    // A controller without an addon for its platform (macOS, Windows, another arch) manages
    // remote hosts only: say so before starting an agent that could not lock anything.
    const unavailable = nativeUnavailable();
    if (unavailable) return { where, call: () => Promise.reject(unavailable) };
    const transport = localTransport(inputs);
    return { where, call: (request, timeoutMs) => send(transport, request, timeoutMs) };
  }
  return {
    where,
    async call<T>(request: AgentCall, timeoutMs: number): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      const left = (): number => Math.max(1, deadline - Date.now());
      const ready = await presumedAgent(conn, inputs.agent?.dir, left());
      if (ready) return send<T>(ready, request, left());
      const agent = await ensureAgent(conn, { dir: inputs.agent?.dir, timeoutMs: left() });
      try {
        return await send<T>(new SshTransport(conn, { agentCommand: agent.command, agentVersion: agent.version, persistent: true }), request, left());
      } catch (e) {
        // The bootstrap refused files that do not match (tampered, or half replaced by
        // hand): nothing ran. Upload the bundle again and retry once.
        const missing = e instanceof TransportError && e.code === "ENOAGENT";
        if (!isHashMismatch(e) && !missing) throw e;
        const again = await ensureAgent(conn, { dir: inputs.agent?.dir, timeoutMs: left(), force: true });
        return send<T>(new SshTransport(conn, { agentCommand: again.command, agentVersion: again.version, persistent: true }), request, left());
      }
    },
  };
}

/** With install "never", the fix for an agent that is not there, in the resource's terms. */
function missingAgent(e: unknown, agentPath: string | undefined, remote: boolean): unknown {
  if (!(e instanceof TransportError) || e.code !== "ENOAGENT") return e;
  const now = agentPath === undefined ? "unset: lockmem on the PATH" : JSON.stringify(agentPath);
  return new TransportError({
    code: e.code,
    where: e.where,
    message: e.message.startsWith(`${e.where}: `) ? e.message.slice(e.where.length + 2) : e.message,
    hint: `set agent.path (now ${now}) to the lockmem command ${remote ? "on the host" : "on this machine"}, install lockmem there (npm install -g pulumi-lockmem), or use agent.install: "auto"${remote ? " to have the provider deploy it" : ""}`,
  });
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
