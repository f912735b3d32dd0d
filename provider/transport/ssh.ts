// Runs the agent on a remote host over SSH (ssh2). The command line is fixed
// (`[sudo -n --] <agentPath> agent`); every parameter travels as JSON on stdin.
//
// Connections are pooled per host/port/user/credentials/jump host and reused by every
// operation of this process; their sockets are unref'd while idle, so an open pool never
// keeps a finished program alive, and they are closed at exit or by closeAll().
import * as crypto from "crypto";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { Client, ClientChannel, ConnectConfig, utils as sshUtils } from "ssh2";
import { AgentReply, AgentRequest, PROTOCOL_VERSION, VersionResult } from "../../src/agent/protocol";
import { AgentExit, MAX_AGENT_OUTPUT, checkVersionReply, explainUnprivileged, interpretAgentExit } from "./agent-output";
import { HostKey, blobType, fingerprint, hostKeyAlgorithms, parseKeyLine, readKnownHosts } from "./known-hosts";
import { DEFAULT_OPERATION_TIMEOUT_MS, RunOptions, Transport, TransportError } from "./types";
import { trace } from "../trace";

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

const DEFAULT_PORT = 22;
const DEFAULT_USER = "root";
const DEFAULT_DIAL_ERROR_LIMIT = 10;
const DEFAULT_PER_DIAL_TIMEOUT_S = 15;
const DEFAULT_AGENT_PATH = "lockmem";
/** sshd allows 10 sessions per connection by default (MaxSessions); stay under it. */
const MAX_CHANNELS_PER_CONNECTION = 8;
/** A path made only of these characters cannot do anything in the remote shell but name a file. */
const SAFE_AGENT_PATH = /^[A-Za-z0-9_./+-]+$/;

// ------------------------------------------------------------------ settings

interface Endpoint {
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

function usage(where: string, message: string, hint?: string): TransportError {
  return new TransportError({ code: "EUSAGE", where, message, hint });
}

/** `role` names the hop as the inputs do: "connection" or "connection.proxy". */
function endpointOf(c: SshProxyConnection, shared: Pick<SshConnection, "knownHostsPath">, role: "connection" | "connection.proxy"): Endpoint {
  const port = c.port ?? DEFAULT_PORT;
  const user = c.user ?? DEFAULT_USER;
  const where = `ssh ${user}@${c.host}:${port}`;
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

/** Identifies a connection without holding a secret: credentials enter only as a hash. */
function poolKey(e: Endpoint, parent?: string): string {
  const secret = crypto
    .createHash("sha256")
    .update(JSON.stringify([e.password ?? null, e.privateKey ?? null, e.privateKeyPassword ?? null, e.agentSocketPath ?? null]))
    .digest("hex");
  return JSON.stringify([e.host, e.port, e.user, secret, e.hostKey ?? null, e.knownHostsPath, e.insecureIgnoreHostKey, parent ?? null]);
}

// ------------------------------------------------------------------ host keys

interface HostKeyPolicy {
  accept: HostKey[];
  revoked: HostKey[];
  source: string;
  ignore: boolean;
}

function hostKeyPolicy(e: Endpoint): HostKeyPolicy {
  if (e.hostKey !== undefined) {
    const key = parseKeyLine(e.hostKey);
    if (!key) {
      throw usage(e.where, "hostKey is not an OpenSSH public key line", 'give a line like "ssh-ed25519 AAAAC3Nz..." as printed by `ssh-keyscan` or found in /etc/ssh/ssh_host_*_key.pub');
    }
    return { accept: [key], revoked: [], source: "hostKey", ignore: false };
  }
  const known = readKnownHosts(e.knownHostsPath, e.host, e.port);
  if (known.accepted.length === 0 && !e.insecureIgnoreHostKey) {
    throw new TransportError({
      code: "EHOSTKEY",
      where: e.where,
      message: `no host key is known for ${e.host} port ${e.port} (not in ${e.knownHostsPath}, and no hostKey given)`,
      hint:
        `set ${e.role}.hostKey to the host's public key line (e.g. from \`ssh-keyscan -p ${e.port} ${e.host}\`, checked out of band), add it to ${e.knownHostsPath}, or set ${e.role}.insecureIgnoreHostKey: true for a throwaway host` +
        (e.role === "connection.proxy" ? " (connection.insecureIgnoreHostKey covers the target host only, never the jump host)" : ""),
    });
  }
  return { accept: known.accepted, revoked: known.revoked, source: e.knownHostsPath, ignore: e.insecureIgnoreHostKey && known.accepted.length === 0 };
}

// ------------------------------------------------------------------ pool

interface Pooled {
  key: string;
  endpoint: Endpoint;
  client: Client;
  /** The TCP socket (direct connections); a proxied connection holds its parent instead. */
  socket?: net.Socket;
  parent?: Pooled;
  active: number;
  closed: boolean;
  handshakes: Map<string, Promise<VersionResult>>;
  /** Long-lived `agent --serve` sessions on this connection, by command line. */
  sessions: Map<string, AgentSession>;
  freeChannels: number;
  waiters: Array<() => void>;
}

const pool = new Map<string, Promise<Pooled>>();

function hold(p: Pooled): void {
  if (p.active++ === 0) p.socket?.ref();
  if (p.parent) hold(p.parent);
}

function unhold(p: Pooled): void {
  if (--p.active === 0) p.socket?.unref();
  if (p.parent) unhold(p.parent);
}

function channelSlot(p: Pooled, deadline: number, where: string): Promise<void> {
  if (p.freeChannels > 0) {
    p.freeChannels--;
    return Promise.resolve();
  }
  return new Promise<void>((resolve, reject) => {
    const waiter = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      p.waiters.splice(p.waiters.indexOf(waiter), 1);
      reject(timedOut(where, "waiting for a free SSH channel", 0));
    }, timeLeft(deadline));
    p.waiters.push(waiter);
  });
}

function freeSlot(p: Pooled): void {
  const next = p.waiters.shift();
  if (next) next();
  else p.freeChannels++;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function timeLeft(deadline: number): number {
  return Math.max(0, deadline - Date.now());
}

function timedOut(where: string, doing: string, ms: number): TransportError {
  return new TransportError({ code: "ETIMEDOUT", where, message: `${doing} did not finish within the deadline (${ms} ms)` });
}

class DialError extends Error {
  constructor(
    readonly transportError: TransportError,
    readonly retryable: boolean,
  ) {
    super(transportError.message);
  }
}

function tcpConnect(e: Endpoint, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: e.host, port: e.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new DialError(new TransportError({ code: "ECONNECT", where: e.where, message: `TCP connect timed out after ${timeoutMs} ms` }), true));
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.removeAllListeners("error");
      resolve(sock);
    });
    sock.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      sock.destroy();
      reject(new DialError(new TransportError({ code: "ECONNECT", where: e.where, message: `cannot connect: ${err.code ?? err.message}` }), true));
    });
  });
}

function forwardThrough(parent: Pooled, e: Endpoint, timeoutMs: number): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new DialError(new TransportError({ code: "ECONNECT", where: e.where, message: `jump host ${parent.endpoint.where} did not open a channel within ${timeoutMs} ms` }), true)),
      timeoutMs,
    );
    parent.client.forwardOut("127.0.0.1", 0, e.host, e.port, (err, stream) => {
      clearTimeout(timer);
      if (err) {
        reject(new DialError(new TransportError({ code: "ECONNECT", where: e.where, message: `jump host ${parent.endpoint.where} could not connect to ${e.host}:${e.port}: ${err.message}` }), true));
      } else {
        resolve(stream);
      }
    });
  });
}

function authConfig(e: Endpoint): Pick<ConnectConfig, "privateKey" | "passphrase" | "password" | "agent" | "authHandler"> {
  const methods: Array<"publickey" | "agent" | "password"> = [];
  const cfg: Pick<ConnectConfig, "privateKey" | "passphrase" | "password" | "agent" | "authHandler"> = {};
  if (e.privateKey !== undefined) {
    const parsed = sshUtils.parseKey(e.privateKey, e.privateKeyPassword);
    if (parsed instanceof Error) {
      const encrypted = /passphrase|encrypted|decrypt/i.test(parsed.message);
      throw usage(
        e.where,
        `privateKey cannot be used: ${parsed.message}`,
        encrypted ? "the key is encrypted: give its passphrase as privateKeyPassword" : "give the private key's contents (PEM or OpenSSH format), not a path",
      );
    }
    cfg.privateKey = e.privateKey;
    if (e.privateKeyPassword !== undefined) cfg.passphrase = e.privateKeyPassword;
    methods.push("publickey");
  }
  if (e.agentSocketPath) {
    cfg.agent = e.agentSocketPath;
    methods.push("agent");
  }
  if (e.password !== undefined) {
    cfg.password = e.password;
    methods.push("password");
  }
  if (methods.length === 0) {
    throw usage(e.where, "no credentials", "give privateKey, password, or an SSH agent (agentSocketPath or SSH_AUTH_SOCK)");
  }
  cfg.authHandler = methods;
  return cfg;
}

/** One attempt: SSH handshake, host key check and authentication over an open stream. */
function handshake(e: Endpoint, sock: net.Socket | ClientChannel, policy: HostKeyPolicy, timeoutMs: number): Promise<Client> {
  const auth = authConfig(e);
  return new Promise((resolve, reject) => {
    const client = new Client();
    let hostKeyProblem: TransportError | undefined;
    const algos = policy.ignore ? [] : hostKeyAlgorithms(policy.accept);
    const cfg: ConnectConfig = {
      sock,
      username: e.user,
      readyTimeout: timeoutMs,
      ...auth,
      hostVerifier: (key: Buffer): boolean => {
        const seen = `${blobType(key)} ${fingerprint(key)}`;
        if (policy.revoked.some((k) => k.blob.equals(key))) {
          hostKeyProblem = new TransportError({
            code: "EHOSTKEY",
            where: e.where,
            message: `the host presented ${seen}, which ${policy.source} marks as @revoked`,
            hint: "do not connect: this key was revoked; ask the host's administrator for its current key",
          });
          return false;
        }
        if (policy.ignore || policy.accept.some((k) => k.blob.equals(key))) return true;
        const expected = policy.accept.map((k) => `${k.type} ${fingerprint(k.blob)}`).join(" or ");
        hostKeyProblem = new TransportError({
          code: "EHOSTKEY",
          where: e.where,
          message: `host key mismatch: the host presented ${seen}, expected ${expected} (from ${policy.source})`,
          hint: `if the host was reinstalled, check its new key out of band and update ${policy.source === "hostKey" ? "hostKey" : policy.source}; otherwise someone may be intercepting the connection`,
        });
        return false;
      },
    };
    if (algos.length > 0) cfg.algorithms = { serverHostKey: algos as NonNullable<ConnectConfig["algorithms"]>["serverHostKey"] };
    const fail = (err: Error & { level?: string }): void => {
      client.removeAllListeners("ready");
      client.end();
      if (hostKeyProblem) return reject(new DialError(hostKeyProblem, false));
      if (err.level === "client-authentication") {
        const tried = (auth.authHandler as string[]).join(", ");
        return reject(
          new DialError(
            new TransportError({
              code: "EAUTH",
              where: e.where,
              message: `authentication failed for user "${e.user}" (tried: ${tried})`,
              hint: `check that the key is in ~${e.user}/.ssh/authorized_keys on the host (or the password), and that sshd lets "${e.user}" log in (PermitRootLogin, AllowUsers)`,
            }),
            false,
          ),
        );
      }
      if (err.level === "client-timeout") {
        return reject(new DialError(new TransportError({ code: "ECONNECT", where: e.where, message: `no SSH handshake within ${timeoutMs} ms` }), true));
      }
      reject(new DialError(new TransportError({ code: "ECONNECT", where: e.where, message: `SSH handshake failed: ${err.message}` }), true));
    };
    // ssh2 can emit more than one error for one failure (timeout, then the socket closing);
    // the first one decides, the others must not become unhandled 'error' events.
    client.on("error", () => undefined);
    client.once("error", fail);
    client.once("close", () => fail(Object.assign(new Error("connection closed during the SSH handshake"), { level: "client-socket" })));
    client.once("ready", () => {
      client.removeListener("error", fail);
      client.removeAllListeners("close");
      resolve(client);
    });
    client.connect(cfg);
  });
}

async function dial(e: Endpoint, parent: Pooled | undefined, deadline: number): Promise<{ client: Client; socket?: net.Socket }> {
  const policy = hostKeyPolicy(e);
  let lastError: TransportError | undefined;
  for (let attempt = 1; ; attempt++) {
    const left = timeLeft(deadline);
    if (left === 0) {
      throw lastError
        ? new TransportError({ code: "ETIMEDOUT", where: e.where, message: `gave up at the deadline after ${attempt - 1} dial attempt(s); last: ${lastError.message.replace(`${e.where}: `, "")}`, hint: lastError.hint })
        : timedOut(e.where, "connecting", 0);
    }
    const perDial = e.perDialTimeoutMs > 0 ? Math.min(e.perDialTimeoutMs, left) : left;
    const started = Date.now();
    let socket: net.Socket | undefined;
    try {
      const stream = parent ? await forwardThrough(parent, e, perDial) : (socket = await tcpConnect(e, perDial));
      const client = await handshake(e, stream, policy, Math.max(1, perDial - (Date.now() - started)));
      return { client, socket };
    } catch (err) {
      socket?.destroy();
      if (!(err instanceof DialError)) throw err;
      if (!err.retryable) throw err.transportError;
      lastError = err.transportError;
    }
    if (e.dialErrorLimit !== -1 && attempt >= Math.max(1, e.dialErrorLimit)) {
      throw new TransportError({
        code: "ECONNECT",
        where: e.where,
        message: `${lastError.message.replace(`${e.where}: `, "")} (gave up after ${attempt} dial attempt(s))`,
        hint: "check that the host is up, that sshd listens on that address and port, and that no firewall drops the connection",
      });
    }
    await sleep(Math.min(2000, 100 * 2 ** (attempt - 1), timeLeft(deadline)));
  }
}

async function connection(e: Endpoint, proxy: Endpoint | undefined, deadline: number): Promise<Pooled> {
  const parent = proxy ? await connection(proxy, undefined, deadline) : undefined;
  const key = poolKey(e, parent?.key);
  const existing = pool.get(key);
  if (existing) {
    const p = await existing;
    if (!p.closed) return p;
    if (pool.get(key) === existing) pool.delete(key);
    return connection(e, proxy, deadline);
  }
  const promise = (async (): Promise<Pooled> => {
    if (parent) hold(parent);
    try {
      trace("dial-start", e.where);
      const { client, socket } = await dial(e, parent, deadline);
      trace("dial-end", e.where);
      const p: Pooled = { key, endpoint: e, client, socket, parent, active: 0, closed: false, handshakes: new Map(),
      sessions: new Map(), freeChannels: MAX_CHANNELS_PER_CONNECTION, waiters: [] };
      const drop = (): void => {
        p.closed = true;
        if (pool.get(key) === promise) pool.delete(key);
      };
      client.on("close", drop);
      client.on("error", drop);
      socket?.unref();
      return p;
    } finally {
      if (parent) unhold(parent);
    }
  })();
  pool.set(key, promise);
  promise.catch(() => {
    if (pool.get(key) === promise) pool.delete(key);
  });
  return promise;
}

/** Closes every pooled connection (jump hosts last). Safe to call at any time. */
export async function closeAll(): Promise<void> {
  const entries = await Promise.allSettled([...pool.values()]);
  pool.clear();
  const conns = entries.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const depth = (p: Pooled): number => (p.parent ? 1 + depth(p.parent) : 0);
  conns.sort((a, b) => depth(b) - depth(a));
  for (const p of conns) {
    p.closed = true;
    p.client.end();
  }
}

/** How many connections the pool holds (for tests and benchmarks). */
export function pooledConnectionCount(): number {
  return pool.size;
}

let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const promise of pool.values()) {
      // Only settled connections can be closed synchronously; a dial in flight dies with the process.
      void promise.then((p) => p.client.end(), () => undefined);
    }
    pool.clear();
  });
}

// ------------------------------------------------------------------ transport

/** The agent did not answer in time: it may still finish, and resending converges. */
function noAnswer(where: string, op: string): TransportError {
  return new TransportError({
    code: "ETIMEDOUT",
    where,
    message: `${op} did not answer within the deadline`,
    hint: "the agent may still finish on the host; send the same request again (lock and unlock converge), or give a longer timeout",
  });
}

function execAgent(p: Pooled, command: string, request: AgentRequest, deadline: number, sudo: boolean): Promise<AgentReply> {
  const where = p.endpoint.where;
  return new Promise((resolve, reject) => {
    let settled = false;
    let channel: ClientChannel | undefined;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(
      () =>
        finish(() => {
          channel?.close();
          reject(
            noAnswer(where, request.op),
          );
        }),
      timeLeft(deadline),
    );
    p.client.exec(command, (err, stream) => {
      if (err) {
        return finish(() =>
          reject(new TransportError({ code: p.closed ? "ECLOSED" : "EAGENT", where, message: `cannot start \`${command}\`: ${err.message}` })),
        );
      }
      channel = stream;
      let stdout = "";
      let stderr = "";
      let exitCode: number | null | undefined;
      let signal: string | null = null;
      stream.on("data", (d: Buffer) => {
        if (stdout.length < MAX_AGENT_OUTPUT) stdout += d.toString("utf8");
      });
      stream.stderr.on("data", (d: Buffer) => {
        if (stderr.length < MAX_AGENT_OUTPUT) stderr += d.toString("utf8");
      });
      stream.on("exit", (code: number | null, sig?: string) => {
        exitCode = code;
        signal = sig ?? null;
      });
      stream.on("close", () => {
        if (exitCode === undefined && stdout === "") {
          return finish(() =>
            reject(
              new TransportError({
                code: "ECLOSED",
                where,
                message: `the connection was lost while the agent ran ${request.op}`,
                hint: "the operation may or may not have happened on the host; send the same request again (lock and unlock converge to the same end state)",
              }),
            ),
          );
        }
        const exit: AgentExit = { stdout, stderr, exitCode: exitCode ?? null, signal, command, where, sudo };
        finish(() => {
          try {
            resolve(interpretAgentExit(exit));
          } catch (e) {
            reject(e);
          }
        });
      });
      stream.end(JSON.stringify(request));
    });
  });
}

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
}

/**
 * One long-lived agent on a pooled connection: requests go one at a time, in order, as
 * JSON lines; replies come back as lines. A channel that closes, or a request past its
 * deadline, ends the session (the next request starts a new one).
 */
class AgentSession {
  private channel?: ClientChannel;
  private opening?: Promise<ClientChannel>;
  private chain: Promise<unknown> = Promise.resolve();
  private waiting?: { resolve: (r: AgentReply) => void; reject: (e: unknown) => void };
  private buffered = "";
  private stderr = "";

  constructor(
    private readonly p: Pooled,
    private readonly command: string,
    private readonly sudo: boolean,
  ) {}

  request(request: AgentRequest, deadline: number): Promise<AgentReply> {
    const run = this.chain.then(() => this.send(request, deadline));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private open(deadline: number): Promise<ClientChannel> {
    if (this.channel) return Promise.resolve(this.channel);
    if (!this.opening) {
      const where = this.p.endpoint.where;
      this.opening = new Promise<ClientChannel>((resolve, reject) => {
        const timer = setTimeout(() => reject(new TransportError({ code: "ETIMEDOUT", where, message: "starting the agent did not finish within the deadline" })), timeLeft(deadline));
        trace("session-exec", where);
        this.p.client.exec(`${this.command} --serve`, (err, stream) => {
          clearTimeout(timer);
          trace("session-open", where);
          if (err) return reject(new TransportError({ code: this.p.closed ? "ECLOSED" : "EAGENT", where, message: `cannot start \`${this.command}\`: ${err.message}` }));
          this.buffered = "";
          this.stderr = "";
          let exitCode: number | null = null;
          let signal: string | null = null;
          // Data of a stream this session already dropped (reply too long) is ignored.
          stream.on("data", (d: Buffer) => {
            if (this.channel === stream) this.onData(d.toString("utf8"));
          });
          stream.stderr.on("data", (d: Buffer) => {
            if (this.stderr.length < MAX_AGENT_OUTPUT) this.stderr += d.toString("utf8");
          });
          stream.on("exit", (code: number | null, sig?: string) => {
            exitCode = code;
            signal = sig ?? null;
          });
          stream.on("close", () => this.channel === stream && this.onClose({ stdout: "", stderr: this.stderr, exitCode, signal, command: this.command, where, sudo: this.sudo }));
          this.channel = stream;
          resolve(stream);
        });
      }).finally(() => {
        this.opening = undefined;
      });
    }
    return this.opening;
  }

  private onData(text: string): void {
    this.buffered += text;
    for (let nl = this.buffered.indexOf("\n"); nl >= 0; nl = this.buffered.indexOf("\n")) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      const w = this.waiting;
      this.waiting = undefined;
      trace("reply", this.p.endpoint.where);
      if (!w) continue;
      try {
        w.resolve(JSON.parse(line) as AgentReply);
      } catch {
        w.reject(new TransportError({ code: "EAGENT", where: this.p.endpoint.where, message: `the agent answered something that is not JSON: ${line.slice(0, 200)}` }));
      }
    }
    if (this.buffered.length > MAX_AGENT_OUTPUT) {
      // As the one-shot path caps what it keeps: a line this long is no reply of ours, and
      // buffering it would let a broken or hostile agent fill the provider's memory.
      const w = this.waiting;
      this.waiting = undefined;
      this.buffered = "";
      const channel = this.channel;
      this.end();
      channel?.close();
      w?.reject(
        new TransportError({
          code: "EAGENT",
          where: this.p.endpoint.where,
          message: `the agent sent a reply line longer than ${MAX_AGENT_OUTPUT} bytes; the session was closed`,
          hint: "the agent on the host is not a lockmem agent speaking this protocol; check agent.path or redeploy it",
        }),
      );
    }
  }

  private onClose(exit: AgentExit): void {
    this.channel = undefined;
    this.p.sessions.delete(this.command);
    const w = this.waiting;
    this.waiting = undefined;
    if (!w) return;
    try {
      // Closed before answering: the same reading as a one-shot agent that exited.
      w.resolve(interpretAgentExit(exit));
    } catch (e) {
      w.reject(e);
    }
  }

  private async send(request: AgentRequest, deadline: number): Promise<AgentReply> {
    const channel = await this.open(deadline);
    const where = this.p.endpoint.where;
    return new Promise<AgentReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        this.end();
        reject(noAnswer(where, request.op));
      }, timeLeft(deadline));
      this.waiting = {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      trace("request-sent", `${where} ${request.op}`);
      channel.write(JSON.stringify(request) + "\n");
    });
  }

  /** Ends the agent: its stdin closes, it finishes what it does and exits. */
  end(): void {
    this.channel?.end();
    this.channel = undefined;
    this.p.sessions.delete(this.command);
  }
}

export class SshTransport implements Transport {
  readonly where: string;
  private readonly endpoint: Endpoint;
  private readonly proxy?: Endpoint;
  private readonly command: string;
  private readonly sudo: boolean;
  private readonly knownVersion?: VersionResult;
  private readonly persistent: boolean;

  constructor(conn: SshConnection, opts: SshTransportOptions = {}) {
    const shared = { knownHostsPath: conn.knownHostsPath };
    this.endpoint = endpointOf(conn, shared, "connection");
    this.proxy = conn.proxy ? endpointOf(conn.proxy, shared, "connection.proxy") : undefined;
    this.where = this.proxy ? `${this.endpoint.where} via ${this.proxy.host}:${this.proxy.port}` : this.endpoint.where;
    const agentPath = conn.agentPath ?? DEFAULT_AGENT_PATH;
    if (!SAFE_AGENT_PATH.test(agentPath) || agentPath.startsWith("-")) {
      throw usage(this.where, `agentPath ${JSON.stringify(agentPath)} has characters other than letters, digits and _ . / + -`, "give a plain path such as /usr/local/bin/lockmem");
    }
    this.sudo = conn.sudo ?? false;
    const command = opts.agentCommand ?? `${agentPath} agent`;
    this.command = this.sudo ? `sudo -n -- ${command}` : command;
    this.knownVersion = opts.agentVersion;
    this.persistent = opts.persistent === true;
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
    // A pooled connection that died while idle is dialed again once; the request had not been sent.
    for (let attempt = 0; ; attempt++) {
      const p = await Promise.race([connection(this.endpoint, this.proxy, deadline), deadlineTimer]);
      hold(p);
      try {
        await channelSlot(p, deadline, this.where);
        try {
          const agent = this.knownVersion ?? (await this.versionOf(p, deadline));
          if (request.op === "version") return { v: PROTOCOL_VERSION, ok: true, id: request.id, result: agent };
          const reply = this.persistent ? await this.sessionOf(p).request(request, deadline) : await execAgent(p, this.command, request, deadline, this.sudo);
          return explainUnprivileged(reply, agent, this.endpoint.user, this.sudo);
        } finally {
          freeSlot(p);
        }
      } catch (e) {
        const stale = e instanceof TransportError && e.code === "ECLOSED" && /cannot start/.test(e.message);
        if (!stale || attempt > 0) throw e;
      } finally {
        unhold(p);
      }
    }
  }

  private sessionOf(p: Pooled): AgentSession {
    let session = p.sessions.get(this.command);
    if (!session) {
      session = new AgentSession(p, this.command, this.sudo);
      p.sessions.set(this.command, session);
    }
    return session;
  }

  /** The version handshake, once per connection and agent command (on the session, if persistent). */
  private versionOf(p: Pooled, deadline: number): Promise<VersionResult> {
    let v = p.handshakes.get(this.command);
    if (!v) {
      const request: AgentRequest = { v: PROTOCOL_VERSION, op: "version" };
      const reply = this.persistent ? this.sessionOf(p).request(request, deadline) : execAgent(p, this.command, request, deadline, this.sudo);
      v = reply.then((r) => checkVersionReply(r, this.where));
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

/**
 * Runs `fn` with the pooled connection to the host of `conn` (dialed if needed, with the
 * same host key checks), e.g. to upload files over SFTP. The connection stays pooled.
 */
export async function withSshClient<T>(conn: SshConnection, timeoutMs: number, fn: (client: Client, where: string) => Promise<T>): Promise<T> {
  const shared = { knownHostsPath: conn.knownHostsPath };
  const endpoint = endpointOf(conn, shared, "connection");
  const proxy = conn.proxy ? endpointOf(conn.proxy, shared, "connection.proxy") : undefined;
  installExitHook();
  const p = await connection(endpoint, proxy, Date.now() + timeoutMs);
  hold(p);
  try {
    return await fn(p.client, endpoint.where);
  } finally {
    unhold(p);
  }
}
