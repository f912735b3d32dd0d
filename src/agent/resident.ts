// The resident agent (issue 17): `--serve --linger=N` also listens on a unix socket in its
// own bundle folder and stays N seconds after its last request, so that the provider's next
// runs reach it through the SSH connection (a direct-streamlocal channel: sshd connects to
// the socket itself) instead of starting Node on the host for every run. Opt-in
// (agent.lingerSeconds): by default nothing of ours outlives the SSH session.
//
// Who can talk to it: the socket is mode 0600 in the bundle folder, which the bootstrap
// already checked belongs to us or root and is writable by nobody else (verified-addon.ts);
// here the folder must moreover be ours and closed to group and others (0700, as the
// provider makes it), so only our uid (and root) can connect, as only they could start the
// agent. Under sudo the provider never asks for it (the socket would be the SSH user's way
// to a root process).
//
// What it serves is exactly what the stdin session serves (serve.ts), one request at a time
// across all connections. It gives up the socket and exits when the socket path no longer
// leads to it (redeployed, removed, taken over by a newer agent) or after N idle seconds.
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import type { RequestQueue } from "./serve";
import { serveStream } from "./serve";
import { verifiedBundleDir } from "./verified-addon";
import { MAX_LINGER_SECONDS, MAX_SOCKET_PATH_BYTES, SOCKET_NAME } from "./protocol";

/** How often the resident looks at its socket path and its idle time. */
const CHECK_MS = 1000;
/**
 * The longest a resident keeps taking new connections (LOCKMEM_RESIDENT_MAX_AGE_MS in tests):
 * a cron job every few minutes would otherwise keep one Node process alive for good. Past it
 * the resident gives up its socket (the next run starts a fresh agent) and leaves once idle.
 */
export const MAX_RESIDENT_AGE_MS = 6 * 3600_000;

function maxAgeMs(): number {
  const test = Number(process.env.LOCKMEM_RESIDENT_MAX_AGE_MS);
  return Number.isSafeInteger(test) && test > 0 ? test : MAX_RESIDENT_AGE_MS;
}

/** `--linger=N` among the arguments: N seconds, 1..MAX_LINGER_SECONDS, else undefined. */
export function lingerOf(argv: readonly string[]): number | undefined {
  const arg = argv.find((a) => a.startsWith("--linger="));
  if (arg === undefined) return undefined;
  const text = arg.slice("--linger=".length);
  const n = Number(text);
  return /^[0-9]+$/.test(text) && n >= 1 && n <= MAX_LINGER_SECONDS ? n : undefined;
}

/** A folder of ours that group and others cannot enter: only we (and root) reach a socket in it. */
function privateFolder(dir: string): boolean {
  const st = fs.lstatSync(dir);
  return st.isDirectory() && st.uid === process.geteuid?.() && (st.mode & 0o077) === 0;
}

/** Whether an agent answers on `socket` (a live resident), within a second. */
function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    const done = (live: boolean): void => {
      clearTimeout(timer);
      c.destroy();
      resolve(live);
    };
    const timer = setTimeout(() => done(false), 1000);
    c.once("connect", () => done(true));
    c.once("error", () => done(false));
  });
}

function inodeOf(file: string): number | undefined {
  try {
    const st = fs.lstatSync(file);
    return st.isSocket() ? st.ino : undefined;
  } catch {
    return undefined;
  }
}

function listen(server: net.Server, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(file, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/**
 * Binds `server` under a name of our own, then renames it over `socket` in one step: a
 * client never finds the path missing or half made, and two agents starting at once do not
 * remove each other's socket (the one renamed over sees its path gone and stops). False
 * when something else holds the path (a folder named like the socket, say): then no
 * resident, and the agent serves its own session as without lingerSeconds.
 */
async function bindSocket(server: net.Server, socket: string): Promise<boolean> {
  const mine = `${socket}.${process.pid}`;
  fs.rmSync(mine, { force: true });
  try {
    const oldMask = process.umask(0o077);
    try {
      await listen(server, mine);
    } finally {
      process.umask(oldMask);
    }
    fs.chmodSync(mine, 0o600);
    fs.renameSync(mine, socket);
    return true;
  } catch {
    server.close();
    fs.rmSync(mine, { force: true });
    return false;
  }
}

export interface Resident {
  /** Resolves when the agent has been idle for its linger time (or lost its socket) and stopped listening. */
  untilIdle(): Promise<void>;
}

/**
 * Listens on the bundle folder's socket, unless another agent already answers there or the
 * folder is not fit for it (then undefined: this agent serves its stdin session only).
 */
export async function listenResident(lingerSeconds: number, queue: RequestQueue): Promise<Resident | undefined> {
  const dir = verifiedBundleDir();
  if (dir === undefined) return undefined;
  const socket = path.join(dir, SOCKET_NAME);
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH_BYTES || !privateFolder(dir)) return undefined;
  if (inodeOf(socket) !== undefined && (await answers(socket))) return undefined;
  const connections = new Set<net.Socket>();
  const server = net.createServer((conn) => {
    connections.add(conn);
    conn.on("error", () => undefined);
    void serveStream(conn, conn, queue).finally(() => {
      conn.end();
      connections.delete(conn);
    });
  });
  if (!(await bindSocket(server, socket))) return undefined;
  const ino = inodeOf(socket);
  const retireAt = Date.now() + maxAgeMs();
  let stdinDone = false;
  let stopped = false;
  let wake: () => void = () => undefined;
  const stoppedListening = new Promise<void>((resolve) => (wake = resolve));
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    server.close();
    if (inodeOf(socket) === ino) fs.rmSync(socket, { force: true });
    wake();
  };
  const timer = setInterval(() => {
    const retired = Date.now() >= retireAt;
    if (retired && inodeOf(socket) === ino) fs.rmSync(socket, { force: true });
    const lost = inodeOf(socket) !== ino;
    if (lost) server.close();
    const idle = stdinDone && connections.size === 0 && queue.idle;
    if (idle && (lost || Date.now() - queue.lastActivity >= lingerSeconds * 1000)) stop();
  }, Math.min(CHECK_MS, lingerSeconds * 1000));
  return {
    untilIdle: () => {
      stdinDone = true;
      queue.lastActivity = Math.max(queue.lastActivity, Date.now());
      return stoppedListening;
    },
  };
}
