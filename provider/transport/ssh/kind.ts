// What transportFor() knows of SSH: the settings checked without dialing, the machine they
// name, and the transport for the resource's agent settings.
import { installedAgent } from "../installed-agent";
import { AgentSettings, Transport, TransportError, TransportKind } from "../types";
import { DeployedAgentTransport } from "./deployed";
import { DEFAULT_SSH_PORT, SshConnection, hopWhere, validateSshConnection } from "./settings";
import { SshTransport } from "./transport";

function check(conn: SshConnection): string | undefined {
  if (typeof conn !== "object" || conn === null || Array.isArray(conn)) return "must be an object with at least host";
  if (conn.privateKey === undefined && conn.password === undefined && conn.agentSocketPath === undefined && !process.env.SSH_AUTH_SOCK) {
    return "connection: no credentials: give privateKey, password or agentSocketPath";
  }
  try {
    // Host, port, user, dial settings, hostKey syntax and agentPath; dials nothing.
    validateSshConnection(conn);
  } catch (e) {
    // Transport messages name host, port and user only, never a credential.
    if (e instanceof TransportError) return `connection: ${e.message}${e.hint ? ` (${e.hint})` : ""}`;
    throw e;
  }
  return undefined;
}

/** SSH, for any connection settings. */
export function sshKind(conn: SshConnection | undefined): TransportKind | undefined {
  if (conn === undefined) return undefined;
  return {
    check: () => check(conn),
    machine: () => JSON.stringify([conn.host, conn.port ?? DEFAULT_SSH_PORT, conn.proxy ? [conn.proxy.host, conn.proxy.port ?? DEFAULT_SSH_PORT] : null]),
    where: () => hopWhere(conn),
    open(agent: AgentSettings | undefined): Transport {
      if (agent?.install === "never") return installedAgent(new SshTransport({ ...conn, agentPath: agent.path }), agent.path, true);
      return new DeployedAgentTransport(conn, agent?.dir, agent?.lingerSeconds || undefined);
    },
  };
}
