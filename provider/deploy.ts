// Agent deployment for `agent.install: "auto"`, the way Ansible pushes its modules: before
// the first request to a host, make sure it holds exactly this package's agent bundle in a
// content-addressed folder (<dir>/<version>-<id>), uploaded over SFTP into a temp folder
// and renamed into place, so that no run ever sees half a bundle. A host without Node.js
// >= 18 also gets the pinned Node.js runtime (provider/runtime.ts) into the same store,
// uploaded compressed. The command that runs the agent is fixed and carries the expected
// sha256 of everything it runs (provider/agent-command.ts): a tampered file is never run;
// the provider sees the refusal, uploads again and retries once.
import * as crypto from "crypto";
import * as path from "path";
import { Client, SFTPWrapper } from "ssh2";
import { AgentBundle, BUNDLE_FILES, MANIFEST, loadBundle } from "./agent-bundle";
import { HASH_MISMATCH_TEXT, hostNodeCommand, presumedCommand, q, runtimeCommand, shellDir } from "./agent-command";
import { CachedRuntime, NODE_RUNTIMES, cacheDir, RUNTIME_BINARY, RUNTIME_GLIBC_FLOOR, RuntimeArch, nodeRuntime, runtimeArch, runtimeFolderName } from "./runtime";
import { VersionResult } from "../src/agent/protocol";
import { SshConnection, withSshClient } from "./transport/ssh";
import { trace } from "./trace";

export const DEFAULT_AGENT_DIR = "~/.lockmem/agent";
export const MIN_NODE_MAJOR = 18;
export type DeployErrorCode = "ENONODE" | "EDEPLOY";

export class DeployError extends Error {
  constructor(
    readonly code: DeployErrorCode,
    readonly where: string,
    message: string,
    readonly hint?: string,
  ) {
    super(`${where}: ${message}${hint ? ` (${hint})` : ""}`);
    this.name = "DeployError";
  }
}

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

interface RemoteResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

function exec(client: Client, command: string, where: string, what: string, timeoutMs: number): Promise<RemoteResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new DeployError("EDEPLOY", where, `${what} did not finish within ${timeoutMs} ms`)), timeoutMs);
    client.exec(command, (err, stream) => {
      if (err) {
        clearTimeout(timer);
        return reject(new DeployError("EDEPLOY", where, `cannot run a command for ${what}: ${err.message}`));
      }
      let stdout = "";
      let stderr = "";
      let code: number | null = null;
      stream.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
      stream.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
      stream.on("exit", (c: number | null) => (code = c));
      stream.on("close", () => {
        clearTimeout(timer);
        resolve({ stdout, stderr, code });
      });
      stream.end();
    });
  });
}

/** What the host has, as far as deploying the agent is concerned. */
interface Probe {
  home: string;
  node?: string;
  nodeVersion?: string;
  uid?: number;
  /** `uname -m`. */
  arch: string;
  /** The first line of `getconf GNU_LIBC_VERSION` (or `ldd --version`): "glibc 2.36", "musl libc ...", "". */
  libc: string;
  /** Tools the bootstrap needs that `command -v` did not find. */
  missing: string[];
  present: boolean;
  hashes: Map<string, string>;
  /** sha256 of the runtime binary per runtime folder name found in the store. */
  runtimes: Map<string, string>;
}

/** The tools the deployed agent's commands use on the host, besides sh. */
const HOST_TOOLS = ["sha256sum", "gzip"];

async function probe(client: Client, where: string, store: string, folder: string, timeoutMs: number): Promise<Probe> {
  const runtimeNames = (Object.keys(NODE_RUNTIMES) as RuntimeArch[]).map(runtimeFolderName);
  const script = [
    'printf "home=%s\\nuid=%s\\narch=%s\\n" "$HOME" "$(id -u)" "$(uname -m)"',
    'printf "libc=%s\\n" "$( { getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>&1; } | head -n 1)"',
    `for t in ${HOST_TOOLS.join(" ")}; do command -v "$t" >/dev/null 2>&1 || echo "missing=$t"; done`,
    'if p=$(command -v node); then printf "node=%s\\nversion=%s\\n" "$p" "$("$p" -v 2>/dev/null)"; fi',
    `for r in ${runtimeNames.join(" ")}; do if [ -f ${store}/"$r"/${RUNTIME_BINARY} ]; then echo "runtime=$r $(sha256sum < ${store}/"$r"/${RUNTIME_BINARY})"; fi; done`,
    `if cd ${folder} 2>/dev/null; then echo present=1; sha256sum ${BUNDLE_FILES.join(" ")} 2>/dev/null; fi`,
    "exit 0",
  ].join("\n");
  const r = await exec(client, script, where, "probing the host", timeoutMs);
  const out: Probe = { home: "", arch: "", libc: "", missing: [], present: false, hashes: new Map(), runtimes: new Map() };
  for (const line of r.stdout.split("\n")) {
    const kv = /^(home|uid|arch|libc|missing|node|version|present|runtime)=(.*)$/.exec(line);
    if (kv) {
      const [, k, v] = kv;
      if (k === "home") out.home = v;
      else if (k === "uid") out.uid = Number(v);
      else if (k === "arch") out.arch = v.trim();
      else if (k === "libc") out.libc = v.trim();
      else if (k === "missing") out.missing.push(v.trim());
      else if (k === "node") out.node = v;
      else if (k === "version") out.nodeVersion = v.trim();
      else if (k === "runtime") {
        const m = /^(\S+) ([0-9a-f]{64})\b/.exec(v);
        if (m) out.runtimes.set(m[1], m[2]);
      } else out.present = true;
      continue;
    }
    const sum = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (sum) out.hashes.set(sum[2], sum[1]);
  }
  if (!out.home) throw new DeployError("EDEPLOY", where, `probing the host gave no home folder (exit ${r.code}): ${r.stderr.trim().slice(0, 300)}`);
  return out;
}

/** Whether a `node -v` / process.version ("v20.11.1") can run the agent bundle. */
export function supportedNode(version: string | undefined): boolean {
  return Number(/^v?(\d+)\./.exec(version ?? "")?.[1]) >= MIN_NODE_MAJOR;
}

/** The glibc version in a probe's libc line, or undefined (musl, or nothing known). */
export function glibcVersion(libc: string): string | undefined {
  if (!/glibc|gnu libc/i.test(libc)) return undefined;
  return /(\d+\.\d+)(?!.*\d+\.\d+)/.exec(libc)?.[1];
}

function versionAtLeast(v: string, floor: string): boolean {
  const [a, b] = v.split(".").map(Number);
  const [fa, fb] = floor.split(".").map(Number);
  return a > fa || (a === fa && b >= fb);
}

/** The oldest glibc the prebuilt addon loads with (its highest GLIBC_ symbol version). */
export const ADDON_GLIBC_FLOOR = "2.17";

/** The host's architecture and C library against what the bundle's addon needs. */
function checkHost(p: Probe, bundle: AgentBundle, where: string): void {
  const arch = runtimeArch(p.arch);
  if (`linux-${arch}` !== bundle.manifest.arch) {
    throw new DeployError("EDEPLOY", where, `the lockmem agent has a native addon for ${bundle.manifest.arch} only, and this host is ${p.arch || "of an unknown architecture"}`, 'lock processes on x86_64 hosts, or install lockmem there yourself and set agent: { install: "never", path: "/path/to/lockmem" }');
  }
  const glibc = glibcVersion(p.libc);
  if (/musl/i.test(p.libc) || (glibc && !versionAtLeast(glibc, ADDON_GLIBC_FLOOR))) {
    throw new DeployError("EDEPLOY", where, `the lockmem agent's addon needs glibc >= ${ADDON_GLIBC_FLOOR}, and this host has ${p.libc || "no glibc"}`, "use a host with a glibc-based Linux distribution");
  }
}

const nodeFix = `install Node.js ${MIN_NODE_MAJOR} or later on the host (e.g. \`apt-get install nodejs\` or a NodeSource package) so that \`node\` is on the PATH of SSH sessions, or install lockmem there yourself and set agent: { install: "never", path: "/path/to/lockmem" }`;

/** The host's own node when it can run the agent: preferred, nothing to upload. */
function usableHostNode(p: Probe): string | undefined {
  return p.node && supportedNode(p.nodeVersion) ? p.node : undefined;
}

/**
 * Whether the pinned runtime can run on this host (no Node.js >= 18 there); throws what
 * is missing otherwise.
 */
function checkRuntimeHost(p: Probe, conn: SshConnection, where: string): RuntimeArch {
  const has = p.node ? `${p.node} is ${p.nodeVersion || "a version that does not run"}` : "`node` is not on the PATH of SSH sessions";
  if (conn.sudo) {
    // sudo runs the agent as root: the binary it runs must be one the SSH user cannot
    // change, and an uploaded runtime lives in that user's folder.
    throw new DeployError("ENONODE", where, `with sudo: true the lockmem agent runs with the host's own Node.js >= ${MIN_NODE_MAJOR} (a root-owned binary), and ${has}`, `${nodeFix}; or connect as root, which lets lockmem bring its own Node.js runtime`);
  }
  const arch = runtimeArch(p.arch)!;
  const glibc = glibcVersion(p.libc);
  if (!glibc || !versionAtLeast(glibc, RUNTIME_GLIBC_FLOOR)) {
    throw new DeployError("ENONODE", where, `the host has no Node.js >= ${MIN_NODE_MAJOR} (${has}) and the Node.js runtime lockmem brings needs glibc >= ${RUNTIME_GLIBC_FLOOR}, while this host has ${p.libc || "no glibc that getconf or ldd reports"}`, nodeFix);
  }
  if (p.missing.length > 0) {
    throw new DeployError("ENONODE", where, `the host has no Node.js >= ${MIN_NODE_MAJOR} (${has}), and running the Node.js runtime lockmem brings needs ${p.missing.join(" and ")}, which the PATH of SSH sessions lacks`, `install ${p.missing.join(" and ")} (coreutils, gzip) on the host, or ${nodeFix}`);
  }
  return arch;
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

async function uploadBundle(client: Client, where: string, bundle: AgentBundle, base: string, final: string): Promise<void> {
  const s = await sftpOf(client, where);
  try {
    await placeFolder(
      s,
      base,
      final,
      async (tmp) => {
        for (const f of BUNDLE_FILES) {
          await sftpCall((cb) => s.writeFile(`${tmp}/${f}`, bundle.contents[f], { mode: 0o600 }, (e) => cb(e)));
        }
        await sftpCall((cb) => s.writeFile(`${tmp}/${MANIFEST}`, JSON.stringify(bundle.manifest, null, 2) + "\n", { mode: 0o600 }, (e) => cb(e)));
      },
      () => intactOver(s, final, bundle),
    );
  } catch (e) {
    throw new DeployError("EDEPLOY", where, `uploading the agent to ${final} failed: ${(e as Error).message}`, `check that the SSH user may write to ${base}, or set agent.dir`);
  } finally {
    s.end();
  }
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
  const s = await sftpOf(client, where);
  try {
    await placeFolder(
      s,
      base,
      final,
      async (tmp) => {
        const gz = `${tmp}/${RUNTIME_BINARY}.gz`;
        await sftpCall((cb) => s.fastPut(rt.gzPath, gz, { mode: 0o600 }, (e) => cb(e)));
        const file = `${tmp}/${RUNTIME_BINARY}`;
        const r = await exec(client, `gzip -dc ${q(gz)} > ${q(file)} && rm -f ${q(gz)} && chmod 500 ${q(file)} && ${hashTest(file, rt.spec.nodeSha256)}`, where, "unpacking the Node.js runtime", timeoutMs);
        if (r.code !== 0) throw new Error(`unpacking it on the host failed (exit ${r.code}): ${r.stderr.trim().slice(0, 300) || "the unpacked binary does not match its sha256"}`);
      },
      async () => (await exec(client, hashTest(binary, rt.spec.nodeSha256), where, "checking the Node.js runtime", timeoutMs)).code === 0,
    );
  } catch (e) {
    throw new DeployError("EDEPLOY", where, `installing the Node.js runtime ${rt.spec.pkg}@${rt.spec.version} into ${final} failed: ${(e as Error).message}`, `check that the SSH user may write to ${base} and that its file system allows running programs, or install Node.js >= ${MIN_NODE_MAJOR} on the host`);
  } finally {
    s.end();
  }
}

function folderName(bundle: AgentBundle): string {
  return `${bundle.manifest.version}-${bundle.manifest.id.slice(0, 16)}`;
}

const deployed = new Map<string, Promise<DeployedAgent>>();

function cacheKey(conn: SshConnection, dir: string): string {
  return JSON.stringify([conn.host, conn.port ?? 22, conn.user ?? "root", conn.proxy?.host ?? null, conn.proxy?.port ?? null, dir]);
}

async function deploy(conn: SshConnection, agentDir: string, timeoutMs: number): Promise<DeployedAgent> {
  const deadline = Date.now() + timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  const bundle = loadBundle();
  const name = folderName(bundle);
  return withSshClient(conn, timeoutMs, async (client, where) => {
    trace("probe-start", where);
    const p = await probe(client, where, shellDir(agentDir), `${shellDir(agentDir)}/${q(name)}`, left());
    trace("probe-end", where);
    checkHost(p, bundle, where);
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
      arch: "x64",
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
  const bundle = loadBundle();
  const arch = bundle.manifest.arch.replace(/^linux-/, "") as RuntimeArch;
  const runtime = { file: shellDir(`${agentDir}/${runtimeFolderName(arch)}/${RUNTIME_BINARY}`), sha256: NODE_RUNTIMES[arch].nodeSha256 };
  return presumedCommand(runtime, shellDir(`${agentDir}/${folderName(bundle)}`), bundle);
}

/** Whether ensureAgent has deployed (or is deploying) to this host in this process. */
export function deployedHere(conn: SshConnection, agentDir = DEFAULT_AGENT_DIR): boolean {
  return deployed.has(cacheKey(conn, agentDir));
}

/** True when an agent run failed because its files did not match (see agent-command.ts). */
export function isHashMismatch(err: unknown): boolean {
  return err instanceof Error && err.message.includes(HASH_MISMATCH_TEXT);
}
