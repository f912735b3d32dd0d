// Dialing one hop: TCP connect (or a channel through the jump host), SSH handshake, host
// key check and authentication, attempted again on failures that may pass (the only retry
// of a connection), within the hop's dial limits and the operation's deadline.
import * as net from "net";
import { Client, ClientChannel, ConnectConfig, utils as sshUtils } from "ssh2";
import { timeLeft, timedOut } from "../deadline";
import { HostKeyPolicy, hostKeyAlgorithms, hostKeyPolicy, hostKeyProblem } from "./known-hosts";
import { Endpoint, usage } from "./settings";
import { TransportError } from "../types";

/** An open connection to a jump host, through which the next hop is dialed. */
export interface JumpHost {
  client: Client;
  endpoint: Endpoint;
}

type AuthConfig = Pick<ConnectConfig, "privateKey" | "passphrase" | "password" | "agent" | "authHandler">;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
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

function forwardThrough(parent: JumpHost, e: Endpoint, timeoutMs: number): Promise<ClientChannel> {
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

function authConfig(e: Endpoint): AuthConfig {
  const methods: Array<"publickey" | "agent" | "password"> = [];
  const cfg: AuthConfig = {};
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

/** What a failed handshake means: a refused host key or login is final, anything else may pass. */
function handshakeFailure(e: Endpoint, err: Error & { level?: string }, hostKeyRefusal: TransportError | undefined, auth: AuthConfig, timeoutMs: number): DialError {
  if (hostKeyRefusal) return new DialError(hostKeyRefusal, false);
  if (err.level === "client-authentication") {
    const tried = (auth.authHandler as string[]).join(", ");
    return new DialError(
      new TransportError({
        code: "EAUTH",
        where: e.where,
        message: `authentication failed for user "${e.user}" (tried: ${tried})`,
        hint: `check that the key is in ~${e.user}/.ssh/authorized_keys on the host (or the password), and that sshd lets "${e.user}" log in (PermitRootLogin, AllowUsers)`,
      }),
      false,
    );
  }
  if (err.level === "client-timeout") {
    return new DialError(new TransportError({ code: "ECONNECT", where: e.where, message: `no SSH handshake within ${timeoutMs} ms` }), true);
  }
  return new DialError(new TransportError({ code: "ECONNECT", where: e.where, message: `SSH handshake failed: ${err.message}` }), true);
}

/** One attempt: SSH handshake, host key check and authentication over an open stream. */
function handshake(e: Endpoint, sock: net.Socket | ClientChannel, policy: HostKeyPolicy, timeoutMs: number): Promise<Client> {
  const auth = authConfig(e);
  return new Promise((resolve, reject) => {
    const client = new Client();
    let hostKeyRefusal: TransportError | undefined;
    const algos = policy.ignore ? [] : hostKeyAlgorithms(policy.accept);
    const cfg: ConnectConfig = {
      sock,
      username: e.user,
      readyTimeout: timeoutMs,
      ...auth,
      hostVerifier: (key: Buffer): boolean => {
        const problem = hostKeyProblem(policy, key, e.where);
        if (problem) hostKeyRefusal = problem;
        return problem === undefined;
      },
    };
    if (algos.length > 0) cfg.algorithms = { serverHostKey: algos as NonNullable<ConnectConfig["algorithms"]>["serverHostKey"] };
    const fail = (err: Error & { level?: string }): void => {
      client.removeAllListeners("ready");
      client.end();
      reject(handshakeFailure(e, err, hostKeyRefusal, auth, timeoutMs));
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

export async function dial(e: Endpoint, parent: JumpHost | undefined, deadline: number): Promise<{ client: Client; socket?: net.Socket }> {
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
