// Agent deployment for `agent.install: "auto"`, the way Ansible pushes its modules: before
// the first request to a host, make sure it holds exactly this package's agent bundle for the
// host's architecture (`uname -m`, from the probe) in a content-addressed folder
// (<dir>/<version>-<id>), uploaded over SFTP into a temp folder
// and renamed into place, so that no run ever sees half a bundle. A host without Node.js
// >= 18 also gets the pinned Node.js runtime (provider/agent/runtime.ts) into the same store,
// uploaded compressed. The command that runs the agent is fixed and carries the expected
// sha256 of everything it runs (provider/agent/command.ts): a tampered file is never run;
// the provider sees the refusal, uploads again and retries once.
import * as crypto from "crypto";
import * as path from "path";
import { Client, SFTPWrapper } from "ssh2";
import { AgentBundle, BUNDLE_FILES, MANIFEST, loadBundle } from "./bundle";
import { EXIT_HASH_MISMATCH, hostNodeCommand, presumedCommandPerArch, q, runtimeCommand, shellDir } from "./command";
import { DeployError, MIN_NODE_MAJOR, checkHost, checkRuntimeHost, exec, nodeFix, probe, usableHostNode } from "./host-probe";
import { CachedRuntime, NODE_RUNTIMES, RUNTIME_BINARY, cacheDir, nodeRuntime, runtimeFolderName } from "./runtime";
import { MAX_SOCKET_PATH_BYTES, SOCKET_NAME, VersionResult } from "../../src/agent/protocol";
import { Arch, SHIPPED_ARCHES, unameNames } from "../../src/arch";
import { SshConnection, withSshClient } from "../transport/ssh";
import { trace } from "../trace";
import { DEFAULT_SSH_PORT, DEFAULT_SSH_USER } from "../transport/ssh/settings";
import { TransportError } from "../transport/types";

export const DEFAULT_AGENT_DIR = "~/.lockmem/agent";
export { DeployError, DeployErrorCode, MIN_NODE_MAJOR, glibcVersion, supportedNode } from "./host-probe";
export interface DeployedAgent {
  /** The command line for SshTransport's agentCommand. */
  command: string;
  /** Absolute folder on the host. */
  dir: string;
  nodeVersion: string;
  /**
   * What the agent's version handshake would answer: the command checks the bundle's
   * hashes on every run, so the provider knows exactly which agent runs.
   */
  version: VersionResult;
  /** Whether this call uploaded the bundle (false: it was there already). */
  uploaded: boolean;
  /** Whether this call uploaded the Node.js runtime. */
  runtimeUploaded: boolean;
}

function sftpOf(client: Client, where: string): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) => client.sftp((err, s) => (err ? reject(new DeployError("EDEPLOY", where, `cannot open SFTP: ${err.message}`, "enable the sftp subsystem in sshd_config")) : resolve(s))));
}

function sftpCall<T>(fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));
}

async function mkdirs(s: SFTPWrapper, dir: string): Promise<void> {
  const parts = dir.split("/").filter(Boolean);
  let cur = "";
  for (const part of parts) {
    cur += `/${part}`;
    try {
      await sftpCall((cb) => s.stat(cur, (e) => cb(e)));
    } catch {
      await sftpCall((cb) => s.mkdir(cur, { mode: 0o700 }, (e) => cb(e)));
    }
  }
}

async function removeFolder(s: SFTPWrapper, dir: string): Promise<void> {
  const entries = await sftpCall<Array<{ filename: string }>>((cb) => s.readdir(dir, (e, list) => cb(e, list))).catch(() => []);
  for (const e of entries) await sftpCall((cb) => s.unlink(`${dir}/${e.filename}`, (er) => cb(er))).catch(() => undefined);
  await sftpCall((cb) => s.rmdir(dir, (e) => cb(e))).catch(() => undefined);
}

/** Whether `dir` holds exactly the bundle's files (read back over SFTP). */
async function intactOver(s: SFTPWrapper, dir: string, bundle: AgentBundle): Promise<boolean> {
  for (const f of BUNDLE_FILES) {
    const data = await sftpCall<Buffer>((cb) => s.readFile(`${dir}/${f}`, (e, d) => cb(e, d))).catch(() => undefined);
    if (!data || crypto.createHash("sha256").update(data).digest("hex") !== bundle.manifest.files[f]) return false;
  }
  return true;
}

/**
 * Fills a temp folder next to `final` (`fill`), then renames it into place. A folder in the
 * way that is `intact` already (another upload won the race: hosts sharing a home folder
 * over NFS) is kept; a tampered or partial one is moved aside and replaced.
 */
async function placeFolder(s: SFTPWrapper, base: string, final: string, fill: (tmp: string) => Promise<void>, intact: () => Promise<boolean>): Promise<void> {
  await mkdirs(s, base);
  const tmp = `${base}/.tmp-${crypto.randomBytes(6).toString("hex")}`;
  await sftpCall((cb) => s.mkdir(tmp, { mode: 0o700 }, (e) => cb(e)));
  try {
    await fill(tmp);
    for (let attempt = 0; ; attempt++) {
      try {
        await sftpCall((cb) => s.rename(tmp, final, (e) => cb(e)));
        return;
      } catch (e) {
        if (await intact()) {
          await removeFolder(s, tmp);
          return;
        }
        if (attempt > 0) throw e;
        const old = `${base}/.old-${crypto.randomBytes(6).toString("hex")}`;
        await sftpCall((cb) => s.rename(final, old, (er) => cb(er))).catch(() => undefined);
        await removeFolder(s, old);
      }
    }
  } catch (e) {
    await removeFolder(s, tmp);
    throw e;
  }
}

/** A folder to place on a host: `final`, made under `base`. */
interface Placement {
  where: string;
  base: string;
  final: string;
}

/**
 * placeFolder over a new SFTP session of `client`; a failure becomes the DeployError that
 * `failed` describes (what was being placed, and the fix).
 */
async function placeOverSftp(
  client: Client,
  { where, base, final }: Placement,
  fill: (s: SFTPWrapper, tmp: string) => Promise<void>,
  intact: (s: SFTPWrapper) => Promise<boolean>,
  failed: (e: Error) => DeployError,
): Promise<void> {
  const s = await sftpOf(client, where);
  try {
    await placeFolder(s, base, final, (tmp) => fill(s, tmp), () => intact(s));
  } catch (e) {
    throw failed(e as Error);
  } finally {
    s.end();
  }
}

async function uploadBundle(client: Client, where: string, bundle: AgentBundle, base: string, final: string): Promise<void> {
  await placeOverSftp(
    client,
    { where, base, final },
    async (s, tmp) => {
      for (const f of BUNDLE_FILES) {
        await sftpCall((cb) => s.writeFile(`${tmp}/${f}`, bundle.contents[f], { mode: 0o600 }, (e) => cb(e)));
      }
      await sftpCall((cb) => s.writeFile(`${tmp}/${MANIFEST}`, JSON.stringify(bundle.manifest, null, 2) + "\n", { mode: 0o600 }, (e) => cb(e)));
    },
    (s) => intactOver(s, final, bundle),
    (e) => new DeployError("EDEPLOY", where, `uploading the agent to ${final} failed: ${e.message}`, `check that the SSH user may write to ${base}, or set agent.dir`),
  );
}

/** `[ "$(sha256sum < FILE)" = "HASH  -" ]` as a shell test. */
function hashTest(file: string, sha: string): string {
  return `[ "$(sha256sum < ${q(file)})" = "${sha}  -" ]`;
}

/**
 * Uploads the runtime's compressed binary, inflates it on the host and checks its sha256
 * there, all in a temp folder, then renames the folder into place.
 */
async function installRuntime(client: Client, where: string, rt: CachedRuntime, base: string, timeoutMs: number): Promise<void> {
  const final = `${base}/${runtimeFolderName(rt.arch)}`;
  const binary = `${final}/${RUNTIME_BINARY}`;
  await placeOverSftp(
    client,
    { where, base, final },
    async (s, tmp) => {
      const gz = `${tmp}/${RUNTIME_BINARY}.gz`;
      await sftpCall((cb) => s.fastPut(rt.gzPath, gz, { mode: 0o600 }, (e) => cb(e)));
      const file = `${tmp}/${RUNTIME_BINARY}`;
      const r = await exec(client, `gzip -dc ${q(gz)} > ${q(file)} && rm -f ${q(gz)} && chmod 500 ${q(file)} && ${hashTest(file, rt.spec.nodeSha256)}`, where, "unpacking the Node.js runtime", timeoutMs);
      if (r.code !== 0) throw new Error(`unpacking it on the host failed (exit ${r.code}): ${r.stderr.trim().slice(0, 300) || "the unpacked binary does not match its sha256"}`);
    },
    async () => (await exec(client, hashTest(binary, rt.spec.nodeSha256), where, "checking the Node.js runtime", timeoutMs)).code === 0,
    (e) =>
      new DeployError(
        "EDEPLOY",
        where,
        `installing the Node.js runtime ${rt.spec.pkg}@${rt.spec.version} into ${final} failed: ${e.message}`,
        `check that the SSH user may write to ${base} and that its file system allows running programs, or install Node.js >= ${MIN_NODE_MAJOR} on the host`,
      ),
  );
}

function folderName(bundle: AgentBundle): string {
  return `${bundle.manifest.version}-${bundle.manifest.id.slice(0, 16)}`;
}

const deployed = new Map<string, Promise<DeployedAgent>>();

function cacheKey(conn: SshConnection, dir: string): string {
  return JSON.stringify([conn.host, conn.port ?? DEFAULT_SSH_PORT, conn.user ?? DEFAULT_SSH_USER, conn.proxy?.host ?? null, conn.proxy?.port ?? null, dir]);
}

async function deploy(conn: SshConnection, agentDir: string, timeoutMs: number): Promise<DeployedAgent> {
  const deadline = Date.now() + timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  const folders: Partial<Record<Arch, string>> = {};
  for (const a of SHIPPED_ARCHES) folders[a] = `${shellDir(agentDir)}/${q(folderName(loadBundle(a)))}`;
  return withSshClient(conn, timeoutMs, async (client, where) => {
    trace("probe-start", where);
    const p = await probe(client, where, shellDir(agentDir), folders, left());
    trace("probe-end", where);
    const arch = checkHost(p, where);
    const bundle = loadBundle(arch);
    const name = folderName(bundle);
    const hostNode = usableHostNode(p);
    const runtime = hostNode ? undefined : checkRuntimeHost(p, conn, where);
    const base = agentDir.startsWith("~/") ? path.posix.join(p.home, agentDir.slice(2)) : agentDir;
    const final = `${base}/${name}`;
    const intact = p.present && BUNDLE_FILES.every((f) => p.hashes.get(f) === bundle.manifest.files[f]);
    if (!intact) {
      trace("upload-start", where);
      await uploadBundle(client, where, bundle, base, final);
      trace("upload-end", where);
    }
    let runtimeUploaded = false;
    if (runtime && p.runtimes.get(runtimeFolderName(runtime)) !== NODE_RUNTIMES[runtime].nodeSha256) {
      trace("runtime-start", where);
      const rt = await nodeRuntime(runtime, deadline).catch((e: Error) => {
        const spec = NODE_RUNTIMES[runtime];
        throw new DeployError("ENONODE", where, `the host has no Node.js >= ${MIN_NODE_MAJOR}, and the Node.js runtime for it (${spec.pkg}@${spec.version}) could not be had: ${e.message}`, `let this machine reach the npm registry (or a mirror: LOCKMEM_NODE_REGISTRY), or put the file of \`npm pack ${spec.pkg}@${spec.version}\` into ${path.join(cacheDir(), "runtime")}, or ${nodeFix}`);
      });
      await installRuntime(client, where, rt, base, left());
      runtimeUploaded = true;
      trace("runtime-end", where);
    }
    const nodeVersion = runtime ? `v${NODE_RUNTIMES[runtime].version}` : (p.nodeVersion ?? "");
    const version: VersionResult = {
      protocol: bundle.manifest.protocol,
      agent: bundle.manifest.version,
      node: nodeVersion,
      arch,
      uid: conn.sudo ? 0 : (p.uid ?? -1),
    };
    const command = runtime
      ? runtimeCommand({ file: q(`${base}/${runtimeFolderName(runtime)}/${RUNTIME_BINARY}`), sha256: NODE_RUNTIMES[runtime].nodeSha256 }, q(final), bundle)
      : hostNodeCommand(q(hostNode!), q(final), bundle);
    return { command, dir: final, nodeVersion, version, uploaded: !intact, runtimeUploaded };
  });
}

/**
 * Makes sure the host of `conn` has this package's agent (once per host and process; `force`
 * checks again, after the agent refused its files) and returns the command that runs it.
 */
export function ensureAgent(conn: SshConnection, opts: { dir?: string; timeoutMs: number; force?: boolean }): Promise<DeployedAgent> {
  const dir = opts.dir ?? DEFAULT_AGENT_DIR;
  const key = cacheKey(conn, dir);
  let p = opts.force ? undefined : deployed.get(key);
  if (!p) {
    p = deploy(conn, dir, opts.timeoutMs);
    deployed.set(key, p);
    p.catch(() => {
      if (deployed.get(key) === p) deployed.delete(key);
    });
  }
  return p;
}

/**
 * The command that runs this package's agent where `ensureAgent` puts it, made without asking
 * the host anything: the uploaded runtime if its file is there, else `node` from the PATH of
 * SSH sessions (what the probe would find), and the folders under "$HOME", expanded by the
 * remote shell. It saves the probe, one remote command per host, on every operation after
 * the first deployment. Everything it runs is still hash checked first, so a missing,
 * half-copied or tampered file, or a `node` that cannot run it, only makes the first request
 * fail: the caller then deploys as usual (ensureAgent: probe, upload if needed) and uses that
 * command. Not with sudo: sudo looks `node` up on its own secure_path, so the probe's
 * absolute path is needed there.
 */
export function presumedAgentCommand(conn: SshConnection, agentDir = DEFAULT_AGENT_DIR): string | undefined {
  if (conn.sudo) return undefined;
  // The host's architecture is not known without asking: the command picks by `uname -m`.
  return presumedCommandPerArch(
    SHIPPED_ARCHES.map((arch) => {
      const bundle = loadBundle(arch);
      const runtime = { file: shellDir(`${agentDir}/${runtimeFolderName(arch)}/${RUNTIME_BINARY}`), sha256: NODE_RUNTIMES[arch].nodeSha256 };
      return { unames: unameNames(arch), runtime, dir: shellDir(`${agentDir}/${folderName(bundle)}`), bundle };
    }),
  );
}

/**
 * Where a resident agent (agent.lingerSeconds) of each shipped architecture would have its
 * socket, tried before anything runs on the host. A "~/" folder is guessed as /root or
 * /home/USER (a wrong guess only costs a refused channel: the presumed command then names
 * the socket, or starts the agent). Only paths that fit sun_path.
 */
export function residentSocketGuesses(conn: SshConnection, agentDir = DEFAULT_AGENT_DIR): string[] {
  const user = conn.user ?? DEFAULT_SSH_USER;
  const home = user === "root" ? "/root" : `/home/${user}`;
  const base = agentDir.startsWith("~/") ? `${home}/${agentDir.slice(2)}` : agentDir;
  return SHIPPED_ARCHES.map((a) => path.posix.join(base, folderName(loadBundle(a)), SOCKET_NAME)).filter((s) => path.posix.isAbsolute(s) && Buffer.byteLength(s) <= MAX_SOCKET_PATH_BYTES);
}

/** Whether ensureAgent has deployed (or is deploying) to this host in this process. */
export function deployedHere(conn: SshConnection, agentDir = DEFAULT_AGENT_DIR): boolean {
  return deployed.has(cacheKey(conn, agentDir));
}

/** True when an agent run failed because its files did not match (the bootstrap's exit status, command.ts). */
export function isHashMismatch(err: unknown): boolean {
  return err instanceof TransportError && err.exitCode === EXIT_HASH_MISMATCH;
}
