// Connections are pooled per host/port/user/credentials/jump host and reused by every
// operation of this process; their sockets are unref'd while idle, so an open pool never
// keeps a finished program alive, and they are closed at exit or by closeAll().
import * as crypto from "crypto";
import * as net from "net";
import { Client } from "ssh2";
import { VersionResult } from "../../../src/agent/protocol";
import { timeLeft, timedOut } from "../deadline";
import { dial } from "./dial";
import type { AgentSession } from "./session";
import { Endpoint, SshConnection, endpointsOf } from "./settings";
import { TransportError } from "../types";
import { trace } from "../../trace";

/** sshd allows 10 sessions per connection by default (MaxSessions); stay under it. */
const MAX_CHANNELS_PER_CONNECTION = 8;

export interface Pooled {
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

/** Identifies a connection without holding a secret: credentials enter only as a hash. */
function poolKey(e: Endpoint, parent?: string): string {
  const secret = crypto
    .createHash("sha256")
    .update(JSON.stringify([e.password ?? null, e.privateKey ?? null, e.privateKeyPassword ?? null, e.agentSocketPath ?? null]))
    .digest("hex");
  return JSON.stringify([e.host, e.port, e.user, secret, e.hostKey ?? null, e.knownHostsPath, e.insecureIgnoreHostKey, parent ?? null]);
}

export function hold(p: Pooled): void {
  if (p.active++ === 0) p.socket?.ref();
  if (p.parent) hold(p.parent);
}

export function unhold(p: Pooled): void {
  if (--p.active === 0) p.socket?.unref();
  if (p.parent) unhold(p.parent);
}

export function channelSlot(p: Pooled, deadline: number, where: string): Promise<void> {
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

export function freeSlot(p: Pooled): void {
  const next = p.waiters.shift();
  if (next) next();
  else p.freeChannels++;
}

export async function connection(e: Endpoint, proxy: Endpoint | undefined, deadline: number): Promise<Pooled> {
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
      const p: Pooled = { key, endpoint: e, client, socket, parent, active: 0, closed: false, handshakes: new Map(), sessions: new Map(), freeChannels: MAX_CHANNELS_PER_CONNECTION, waiters: [] };
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

/**
 * Runs `fn` on the pooled connection to `e` (through `proxy`), dialed if needed and held
 * while `fn` runs. A pooled connection that died while idle shows only when it refuses a
 * channel (ECLOSED, nothing started on the host): it is dialed again, once. Dialing itself
 * retries in dial.ts; nothing else in the transport does.
 */
export async function onConnection<T>(e: Endpoint, proxy: Endpoint | undefined, deadline: number, giveUp: Promise<never>, fn: (p: Pooled) => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const p = await Promise.race([connection(e, proxy, deadline), giveUp]);
    hold(p);
    try {
      return await fn(p);
    } catch (err) {
      const stale = err instanceof TransportError && err.code === "ECLOSED" && err.notStarted;
      if (!stale || attempt > 0) throw err;
    } finally {
      unhold(p);
    }
  }
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
export function installExitHook(): void {
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

/**
 * Runs `fn` with the pooled connection to the host of `conn` (dialed if needed, with the
 * same host key checks), e.g. to upload files over SFTP. The connection stays pooled.
 */
export async function withSshClient<T>(conn: SshConnection, timeoutMs: number, fn: (client: Client, where: string) => Promise<T>): Promise<T> {
  const { endpoint, proxy } = endpointsOf(conn);
  installExitHook();
  const p = await connection(endpoint, proxy, Date.now() + timeoutMs);
  hold(p);
  try {
    return await fn(p.client, endpoint.where);
  } finally {
    unhold(p);
  }
}
