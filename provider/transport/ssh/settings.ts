// The SSH connection settings as given (the fields of @pulumi/command's connection types),
// checked and resolved into an Endpoint per hop, and the agent command line they make.
import * as os from "os";
import * as path from "path";
import { TransportError } from "../types";

/** The fields of @pulumi/command's `remote.ProxyConnectionArgs`, resolved (no Inputs). */
export interface SshProxyConnection {
  /** The address of the bastion host. */
  host: string;
  /** Default 22. */
  port?: number;
  /** Default "root". */
  user?: string;
  password?: string;
  /** Contents of an SSH private key; takes preference over the password. */
  privateKey?: string;
  /** Passphrase of an encrypted privateKey. */
  privateKeyPassword?: string;
  /** SSH agent socket; default $SSH_AUTH_SOCK. */
  agentSocketPath?: string;
  /** Dial attempts before giving up; -1: until the deadline. Default 10. */
  dialErrorLimit?: number;
  /** Seconds per dial attempt (TCP connect + SSH handshake + auth); 0: no limit. Default 15. */
  perDialTimeout?: number;
  /** Expected host key, one OpenSSH public key line ("ssh-ed25519 AAAA... [comment]"). */
  hostKey?: string;
  /**
   * Accept any host key from this hop (throwaway hosts only). Per hop: the connection's own
   * field covers the target host, `proxy.insecureIgnoreHostKey` the jump host, so a jump
   * host never inherits it. Refused together with a password, which a man in the middle
   * would receive (issue 14, item 6).
   */
  insecureIgnoreHostKey?: boolean;
}

/** The fields of @pulumi/command's `remote.ConnectionArgs`, plus lockmem's own. */
export interface SshConnection extends SshProxyConnection {
  /** A jump host through which `host` is reached. */
  proxy?: SshProxyConnection;
  /** Run the agent with `sudo -n` (the user needs a NOPASSWD rule for it). */
  sudo?: boolean;
  /** The agent command on the host; default "lockmem" (found on PATH). */
  agentPath?: string;
  /** known_hosts file used when hostKey is not given (for every hop); default ~/.ssh/known_hosts. */
  knownHostsPath?: string;
}

export const DEFAULT_SSH_PORT = 22;
export const DEFAULT_SSH_USER = "root";
const DEFAULT_DIAL_ERROR_LIMIT = 10;
const DEFAULT_PER_DIAL_TIMEOUT_S = 15;
const DEFAULT_AGENT_PATH = "lockmem";
/** A path made only of these characters cannot do anything in the remote shell but name a file. */
const SAFE_AGENT_PATH = /^[A-Za-z0-9_./+-]+$/;

export interface Endpoint {
  host: string;
  port: number;
  user: string;
  password?: string;
  privateKey?: string;
  privateKeyPassword?: string;
  agentSocketPath?: string;
  dialErrorLimit: number;
  perDialTimeoutMs: number;
  hostKey?: string;
  knownHostsPath: string;
  insecureIgnoreHostKey: boolean;
  role: "connection" | "connection.proxy";
  where: string;
}

export function usage(where: string, message: string, hint?: string): TransportError {
  return new TransportError({ code: "EUSAGE", where, message, hint });
}

/** "ssh root@db1:22": one hop, for messages (never holds a secret). */
export function hopWhere(c: SshProxyConnection): string {
  return `ssh ${c.user ?? DEFAULT_SSH_USER}@${c.host}:${c.port ?? DEFAULT_SSH_PORT}`;
}

/** "ssh root@db1:22 via bastion:22": where a transport over `conn` runs the agent. */
export function transportWhere(conn: SshConnection): string {
  return conn.proxy ? `${hopWhere(conn)} via ${conn.proxy.host}:${conn.proxy.port ?? DEFAULT_SSH_PORT}` : hopWhere(conn);
}

/** `role` names the hop as the inputs do: "connection" or "connection.proxy". */
function endpointOf(c: SshProxyConnection, shared: Pick<SshConnection, "knownHostsPath">, role: "connection" | "connection.proxy"): Endpoint {
  const port = c.port ?? DEFAULT_SSH_PORT;
  const user = c.user ?? DEFAULT_SSH_USER;
  const where = hopWhere(c);
  if (typeof c.host !== "string" || c.host === "" || /\s/.test(c.host)) throw usage(`ssh (${role})`, `host must be a host name or address, got ${JSON.stringify(c.host)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw usage(where, `port must be an integer 1..65535, got ${port}`);
  if (user === "" || /[\s@]/.test(user)) throw usage(where, `user must be a user name, got ${JSON.stringify(user)}`);
  const perDial = c.perDialTimeout ?? DEFAULT_PER_DIAL_TIMEOUT_S;
  if (!(perDial >= 0)) throw usage(where, `perDialTimeout must be >= 0 seconds, got ${perDial}`);
  const limit = c.dialErrorLimit ?? DEFAULT_DIAL_ERROR_LIMIT;
  if (!Number.isInteger(limit) || limit < -1) throw usage(where, `dialErrorLimit must be -1 (no limit) or a count, got ${limit}`);
  const ignoreHostKey = c.insecureIgnoreHostKey ?? false;
  if (typeof ignoreHostKey !== "boolean") throw usage(where, `${role}.insecureIgnoreHostKey must be true or false, got ${JSON.stringify(ignoreHostKey)}`);
  if (ignoreHostKey && c.hostKey !== undefined) throw usage(where, `${role}: give hostKey or insecureIgnoreHostKey, not both`);
  if (ignoreHostKey && c.password !== undefined) {
    throw usage(
      where,
      `${role}.insecureIgnoreHostKey cannot be used with password authentication: whoever answers in the host's place would receive the password`,
      `give ${role}.hostKey (from \`ssh-keyscan -p ${port} ${c.host}\`, checked out of band) or authenticate with privateKey instead of password`,
    );
  }
  return {
    host: c.host,
    port,
    user,
    password: c.password,
    privateKey: c.privateKey,
    privateKeyPassword: c.privateKeyPassword,
    agentSocketPath: c.agentSocketPath ?? process.env.SSH_AUTH_SOCK,
    dialErrorLimit: limit,
    perDialTimeoutMs: perDial * 1000,
    hostKey: c.hostKey,
    knownHostsPath: shared.knownHostsPath ?? path.join(os.homedir(), ".ssh", "known_hosts"),
    insecureIgnoreHostKey: ignoreHostKey,
    role,
    where,
  };
}

/** The target host of `conn` and its jump host, if any (the known_hosts file serves both). */
export function endpointsOf(conn: SshConnection): { endpoint: Endpoint; proxy?: Endpoint } {
  const shared = { knownHostsPath: conn.knownHostsPath };
  const endpoint = endpointOf(conn, shared, "connection");
  const proxy = conn.proxy ? endpointOf(conn.proxy, shared, "connection.proxy") : undefined;
  return { endpoint, proxy };
}

/**
 * The agent command line: `agentCommand` (built by the caller from fixed parts only) or
 * `<agentPath> agent`, prefixed with `sudo -n --` when `conn.sudo`.
 */
export function agentCommandLine(conn: SshConnection, agentCommand: string | undefined, where: string): string {
  const agentPath = conn.agentPath ?? DEFAULT_AGENT_PATH;
  if (!SAFE_AGENT_PATH.test(agentPath) || agentPath.startsWith("-")) {
    throw usage(where, `agentPath ${JSON.stringify(agentPath)} has characters other than letters, digits and _ . / + -`, "give a plain path such as /usr/local/bin/lockmem");
  }
  const command = agentCommand ?? `${agentPath} agent`;
  return conn.sudo ? `sudo -n -- ${command}` : command;
}

/**
 * Checks every setting a transport would use (host, port, user, dial settings, host key
 * syntax, agentPath) without constructing one and without dialing; throws the
 * TransportError (EUSAGE) a transport would. The provider's `check` uses it.
 */
export function validateSshConnection(conn: SshConnection): void {
  const { endpoint } = endpointsOf(conn);
  agentCommandLine(conn, undefined, endpoint.where);
}
