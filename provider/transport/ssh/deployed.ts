// This package's agent on a host, deployed by the provider (agent.install "auto"): the
// SSH transport's deployment step. The agent is first started as if it were deployed
// already (no probe: its command checks the hashes of everything it runs); where it is
// not (first run, tampered, no suitable node), it is deployed (provider/agent/deploy.ts)
// and started with the command the deployment gives.
import { AgentReply, AgentRequest, PROTOCOL_VERSION, VersionResult } from "../../../src/agent/protocol";
import { DeployedAgent, deployedHere, ensureAgent, isHashMismatch, presumedAgentCommand, residentSocketGuesses, supportedNode } from "../../agent/deploy";
import { DEFAULT_OPERATION_TIMEOUT_MS, RunOptions, Transport, TransportError, resultOf } from "../types";
import { SshConnection, transportWhere } from "./settings";
import { SshTransport } from "./transport";

/** Failures to reach the host: the deployment path would only fail the same way, later. */
const UNREACHABLE = new Set(["ECONNECT", "EHOSTKEY", "EAUTH", "ETIMEDOUT", "EUSAGE"]);

/**
 * The deployed agent, started without a probe (presumedAgentCommand), ready for requests:
 * its version handshake is the first line on its session. Undefined when it does not run
 * as it should (not deployed yet, tampered, no suitable node): nothing but that handshake
 * ran, and the caller deploys. Unreachable hosts fail here as they would anywhere.
 */
async function presumedAgent(conn: SshConnection, dir: string | undefined, linger: number | undefined, timeoutMs: number): Promise<SshTransport | undefined> {
  if (deployedHere(conn, dir)) return undefined;
  const command = presumedAgentCommand(conn, dir);
  if (!command) return undefined;
  const residentSockets = linger === undefined ? undefined : residentSocketGuesses(conn, dir);
  const transport = new SshTransport(conn, { agentCommand: command, persistent: true, lingerSeconds: linger, residentSockets });
  try {
    const reply = await transport.run({ v: PROTOCOL_VERSION, op: "version" }, { timeoutMs });
    return supportedNode(resultOf<VersionResult>(reply, transport.where).node) ? transport : undefined;
  } catch (e) {
    if (e instanceof TransportError && UNREACHABLE.has(e.code)) throw e;
    return undefined;
  }
}

/** The agent `ensureAgent` deployed, on its persistent session; its version is known. */
function deployedTransport(conn: SshConnection, agent: DeployedAgent, linger: number | undefined): SshTransport {
  return new SshTransport(conn, { agentCommand: agent.command, agentVersion: agent.version, persistent: true, lingerSeconds: linger });
}

export class DeployedAgentTransport implements Transport {
  constructor(
    private readonly conn: SshConnection,
    private readonly dir: string | undefined,
    /** agent.lingerSeconds, when above 0. */
    private readonly linger?: number,
  ) {}

  /** As SshTransport names it (computed when asked: the settings are checked on the first run). */
  get where(): string {
    return transportWhere(this.conn);
  }

  async run(request: AgentRequest, opts: RunOptions = {}): Promise<AgentReply> {
    const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_OPERATION_TIMEOUT_MS);
    const left = (): number => Math.max(1, deadline - Date.now());
    const ready = await presumedAgent(this.conn, this.dir, this.linger, left());
    if (ready) return ready.run(request, { timeoutMs: left() });
    const agent = await ensureAgent(this.conn, { dir: this.dir, timeoutMs: left() });
    try {
      return await deployedTransport(this.conn, agent, this.linger).run(request, { timeoutMs: left() });
    } catch (e) {
      // The bootstrap refused files that do not match (tampered, or half replaced by
      // hand): nothing ran. Upload the bundle again and retry once.
      const missing = e instanceof TransportError && e.code === "ENOAGENT";
      if (!isHashMismatch(e) && !missing) throw e;
      const again = await ensureAgent(this.conn, { dir: this.dir, timeoutMs: left(), force: true });
      return deployedTransport(this.conn, again, this.linger).run(request, { timeoutMs: left() });
    }
  }

  /** The connection stays in the pool (closeAll() ends it). */
  async close(): Promise<void> {
    return;
  }
}
