// Runs the agent on a remote host over SSH (ssh2). The command line is fixed
// (`[sudo -n --] <agentPath> agent`); every parameter travels as JSON on stdin.
// The transport and its version handshake are here; the rest of this folder is one file per
// concern (see index.ts).
import { AgentReply, AgentRequest, PROTOCOL_VERSION, VersionResult } from "../../../src/agent/protocol";
import { checkVersionReply, explainUnprivileged } from "../agent-output";
import { timedOut } from "../deadline";
import { execAgent } from "./exec";
import { Pooled, channelSlot, freeSlot, installExitHook, onConnection } from "./pool";
import { sessionOf } from "./session";
import { Endpoint, SshConnection, agentCommandLine, endpointsOf, transportWhere } from "./settings";
import { DEFAULT_OPERATION_TIMEOUT_MS, RunOptions, Transport } from "../types";

export interface SshTransportOptions {
  /**
   * The whole agent command line, replacing `<agentPath> agent` (sudo still prefixes it).
   * For callers that build it from fixed parts only, such as the provider's deployed agent;
   * never splice user input into it.
   */
  agentCommand?: string;
  /**
   * What the agent's version handshake would answer, for a caller that vouches for the
   * agent (the provider's deployed bundle, whose hashes the command line checks on every
   * run): the handshake, one agent run per connection, is skipped.
   */
  agentVersion?: VersionResult;
  /**
   * Keep one `<command> --serve` agent per connection and send every request as a line
   * on it, instead of starting the agent (Node on the host) for each. Only for agents
   * known to serve (the provider's deployed bundle).
   */
  persistent?: boolean;
  /** With persistent: the agent stays on the host this many seconds after its last request (session.ts). */
  lingerSeconds?: number;
  /** With lingerSeconds: where a resident agent's socket may be, tried before running anything. */
  residentSockets?: string[];
}

export class SshTransport implements Transport {
  readonly where: string;
  private readonly endpoint: Endpoint;
  private readonly proxy?: Endpoint;
  private readonly command: string;
  private readonly sudo: boolean;
  private readonly knownVersion?: VersionResult;
  private readonly persistent: boolean;
  private readonly linger?: number;
  private readonly residentSockets: string[];

  constructor(conn: SshConnection, opts: SshTransportOptions = {}) {
    const { endpoint, proxy } = endpointsOf(conn);
    this.endpoint = endpoint;
    this.proxy = proxy;
    this.where = transportWhere(conn);
    this.command = agentCommandLine(conn, opts.agentCommand, this.where);
    this.sudo = conn.sudo ?? false;
    this.knownVersion = opts.agentVersion;
    this.persistent = opts.persistent === true;
    this.linger = this.sudo ? undefined : opts.lingerSeconds;
    this.residentSockets = this.linger === undefined ? [] : (opts.residentSockets ?? []);
    installExitHook();
  }

  async run(request: AgentRequest, opts: RunOptions = {}): Promise<AgentReply> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_OPERATION_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const deadlineTimer = new Promise<never>((_, reject) => {
      const t = setTimeout(() => reject(timedOut(this.where, `${request.op}`, timeoutMs)), timeoutMs);
      t.unref();
    });
    deadlineTimer.catch(() => undefined);
    return onConnection(this.endpoint, this.proxy, deadline, deadlineTimer, async (p) => {
      await channelSlot(p, deadline, this.where);
      try {
        const agent = this.knownVersion ?? (await this.versionOf(p, deadline));
        if (request.op === "version") return { v: PROTOCOL_VERSION, ok: true, id: request.id, result: agent };
        const reply = await this.send(p, request, deadline);
        return explainUnprivileged(reply, agent, this.endpoint.user, this.sudo);
      } finally {
        freeSlot(p);
      }
    });
  }

  /** One request to the agent: on the connection's session if persistent, else a one-shot run. */
  private send(p: Pooled, request: AgentRequest, deadline: number): Promise<AgentReply> {
    return this.persistent ? sessionOf(p, this.command, this.sudo, this.linger, this.residentSockets).request(request, deadline) : execAgent(p, this.command, request, deadline, this.sudo);
  }

  /** The version handshake, once per connection and agent command (on the session, if persistent). */
  private versionOf(p: Pooled, deadline: number): Promise<VersionResult> {
    let v = p.handshakes.get(this.command);
    if (!v) {
      const request: AgentRequest = { v: PROTOCOL_VERSION, op: "version" };
      v = this.send(p, request, deadline).then((r) => checkVersionReply(r, this.where));
      p.handshakes.set(this.command, v);
      v.catch(() => p.handshakes.delete(this.command));
    }
    return v;
  }

  /** The connection stays in the pool for other operations; closeAll() ends it. */
  async close(): Promise<void> {
    return;
  }
}

export function sshTransport(conn: SshConnection, opts: SshTransportOptions = {}): SshTransport {
  return new SshTransport(conn, opts);
}
