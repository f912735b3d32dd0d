// Agent deployment for `agent.install: "auto"`, the way Ansible pushes its modules: before
// the first request to a host, make sure it holds exactly this package's agent bundle in a
// content-addressed folder (<dir>/<version>-<id>), uploaded over SFTP into a temp folder
// and renamed into place, so that no run ever sees half a bundle. The command that runs it
// is fixed and carries the expected sha256 of both files: a small bootstrap reads them,
// checks the hashes and only then runs the agent, every time. A tampered file is never run;
// the provider sees the refusal, uploads the bundle again and retries once.
import * as crypto from "crypto";
import * as path from "path";
import { Client, SFTPWrapper } from "ssh2";
import { AGENT_ADDON, AGENT_JS, AgentBundle, BUNDLE_FILES, MANIFEST, loadBundle } from "./agent-bundle";
import { VersionResult } from "../src/agent/protocol";
import { SshConnection, withSshClient } from "./transport/ssh";
import { trace } from "./trace";

export const DEFAULT_AGENT_DIR = "~/.lockmem/agent";
export const MIN_NODE_MAJOR = 18;
/** Exit status of the bootstrap when a file does not match its hash. */
export const EXIT_HASH_MISMATCH = 86;
export const HASH_MISMATCH_TEXT = "do not match their sha256";

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
}

/**
 * Runs on the host as `node -e BOOT DIR JS_SHA256 ADDON_SHA256`: reads both files, checks
 * them, and runs the JS it checked (from memory, not from the file again). No single quote
 * inside: it travels single-quoted through the remote shell.
 */
const BOOT = [
  'const c=require("crypto"),f=require("fs"),p=require("path"),M=require("module");',
  "const [d,hj,ha]=process.argv.slice(1);",
  'const h=(b)=>c.createHash("sha256").update(b).digest("hex");',
  `const js=f.readFileSync(p.join(d,"${AGENT_JS}")),ad=p.join(d,"${AGENT_ADDON}");`,
  `if(h(js)!==hj||h(f.readFileSync(ad))!==ha){process.stderr.write("lockmem: the agent files in "+d+" ${HASH_MISMATCH_TEXT}: refusing to run them\\n");process.exit(${EXIT_HASH_MISMATCH});}`,
  "process.env.LOCKMEM_ADDON=ad;",
  `const m=new M(p.join(d,"${AGENT_JS}"),null);m.filename=m.id;m.paths=[];m._compile(js.toString("utf8"),m.filename);`,
].join("");

/** Single-quotes for a POSIX shell. */
function q(s: string): string {
  return /^[A-Za-z0-9_./+=:@-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

interface RemoteResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

function exec(client: Client, command: string, where: string, timeoutMs: number): Promise<RemoteResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new DeployError("EDEPLOY", where, `probing the host did not finish within ${timeoutMs} ms`)), timeoutMs);
    client.exec(command, (err, stream) => {
      if (err) {
        clearTimeout(timer);
        return reject(new DeployError("EDEPLOY", where, `cannot run a command to probe the host: ${err.message}`));
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

/** `dir` as a shell word: "~/x" becomes "$HOME"/x. */
function shellDir(dir: string): string {
  return dir.startsWith("~/") ? `"$HOME"/${q(dir.slice(2))}` : q(dir);
}

interface Probe {
  home: string;
  node?: string;
  nodeVersion?: string;
  uid?: number;
  present: boolean;
  hashes: Map<string, string>;
}

async function probe(client: Client, where: string, folder: string, timeoutMs: number): Promise<Probe> {
  const script = [
    'printf "home=%s\\nuid=%s\\n" "$HOME" "$(id -u)"',
    'if p=$(command -v node); then printf "node=%s\\nversion=%s\\n" "$p" "$("$p" -v 2>/dev/null)"; fi',
    `if cd ${folder} 2>/dev/null; then echo present=1; sha256sum ${BUNDLE_FILES.join(" ")} 2>/dev/null; fi`,
    "exit 0",
  ].join("\n");
  const r = await exec(client, script, where, timeoutMs);
  const out: Probe = { home: "", present: false, hashes: new Map() };
  for (const line of r.stdout.split("\n")) {
    const kv = /^(home|uid|node|version|present)=(.*)$/.exec(line);
    if (kv) {
      if (kv[1] === "home") out.home = kv[2];
      else if (kv[1] === "uid") out.uid = Number(kv[2]);
      else if (kv[1] === "node") out.node = kv[2];
      else if (kv[1] === "version") out.nodeVersion = kv[2].trim();
      else out.present = true;
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

function checkNode(p: Probe, where: string): string {
  const fix = `install Node.js ${MIN_NODE_MAJOR} or later on the host (e.g. \`apt-get install nodejs\` or a NodeSource package) so that \`node\` is on the PATH of SSH sessions, or install lockmem there yourself and set agent: { install: "never", path: "/path/to/lockmem" }`;
  if (!p.node) throw new DeployError("ENONODE", where, `the lockmem agent needs Node.js >= ${MIN_NODE_MAJOR} on the host, and \`node\` is not on the PATH of SSH sessions`, fix);
  if (!supportedNode(p.nodeVersion)) {
    throw new DeployError("ENONODE", where, `the lockmem agent needs Node.js >= ${MIN_NODE_MAJOR}, and ${p.node} is ${p.nodeVersion || "a version that does not run"}`, fix);
  }
  return p.node;
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

/** Uploads into a temp folder next to `final`, then renames it into place (replacing a bad one). */
async function upload(client: Client, where: string, bundle: AgentBundle, base: string, final: string): Promise<void> {
  const s = await sftpOf(client, where);
  try {
    await mkdirs(s, base);
    const tmp = `${base}/.tmp-${crypto.randomBytes(6).toString("hex")}`;
    await sftpCall((cb) => s.mkdir(tmp, { mode: 0o700 }, (e) => cb(e)));
    try {
      for (const f of BUNDLE_FILES) {
        await sftpCall((cb) => s.writeFile(`${tmp}/${f}`, bundle.contents[f], { mode: 0o600 }, (e) => cb(e)));
      }
      await sftpCall((cb) => s.writeFile(`${tmp}/${MANIFEST}`, JSON.stringify(bundle.manifest, null, 2) + "\n", { mode: 0o600 }, (e) => cb(e)));
      for (let attempt = 0; ; attempt++) {
        try {
          await sftpCall((cb) => s.rename(tmp, final, (e) => cb(e)));
          break;
        } catch (e) {
          // A folder is in the way. Another upload of the same bundle may just have won the
          // race (hosts sharing a home folder over NFS): then it is ours already.
          if (await intactOver(s, final, bundle)) {
            await removeFolder(s, tmp);
            break;
          }
          if (attempt > 0) throw e;
          // A tampered or partial one: move it aside, then put ours in place.
          const old = `${base}/.old-${crypto.randomBytes(6).toString("hex")}`;
          await sftpCall((cb) => s.rename(final, old, (er) => cb(er))).catch(() => undefined);
          await removeFolder(s, old);
        }
      }
    } catch (e) {
      await removeFolder(s, tmp);
      throw new DeployError("EDEPLOY", where, `uploading the agent to ${final} failed: ${(e as Error).message}`, `check that the SSH user may write to ${base}, or set agent.dir`);
    }
  } finally {
    s.end();
  }
}

/** `node` and `dir` are shell words already (quoted, or "$HOME"/... to be expanded there). */
function agentCommand(node: string, dir: string, bundle: AgentBundle): string {
  return [node, "-e", q(BOOT), dir, bundle.manifest.files[AGENT_JS], bundle.manifest.files[AGENT_ADDON]].join(" ");
}

function folderName(bundle: AgentBundle): string {
  return `${bundle.manifest.version}-${bundle.manifest.id.slice(0, 16)}`;
}

const deployed = new Map<string, Promise<DeployedAgent>>();

function cacheKey(conn: SshConnection, dir: string): string {
  return JSON.stringify([conn.host, conn.port ?? 22, conn.user ?? "root", conn.proxy?.host ?? null, conn.proxy?.port ?? null, dir]);
}

async function deploy(conn: SshConnection, agentDir: string, timeoutMs: number): Promise<DeployedAgent> {
  const bundle = loadBundle();
  const name = folderName(bundle);
  return withSshClient(conn, timeoutMs, async (client, where) => {
    trace("probe-start", where);
    const p = await probe(client, where, `${shellDir(agentDir)}/${q(name)}`, timeoutMs);
    trace("probe-end", where);
    const node = checkNode(p, where);
    const base = agentDir.startsWith("~/") ? path.posix.join(p.home, agentDir.slice(2)) : agentDir;
    const final = `${base}/${name}`;
    const intact = p.present && BUNDLE_FILES.every((f) => p.hashes.get(f) === bundle.manifest.files[f]);
    if (!intact) {
      trace("upload-start", where);
      await upload(client, where, bundle, base, final);
      trace("upload-end", where);
    }
    const version: VersionResult = {
      protocol: bundle.manifest.protocol,
      agent: bundle.manifest.version,
      node: p.nodeVersion ?? "",
      arch: "x64",
      uid: conn.sudo ? 0 : (p.uid ?? -1),
    };
    return { command: agentCommand(q(node), q(final), bundle), dir: final, nodeVersion: p.nodeVersion ?? "", version, uploaded: !intact };
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
 * the host anything: `node` from the PATH of SSH sessions (what the probe would find) and the
 * folder under "$HOME", expanded by the remote shell. It saves the probe, one remote command
 * per host, on every operation after the first deployment. The bootstrap still checks both
 * hashes before it runs anything, so a missing, half-copied or tampered bundle, or a `node`
 * that cannot run it, only makes the first request fail: the caller then deploys as usual
 * (ensureAgent: probe, upload if needed) and uses that command. Not with sudo: sudo looks
 * `node` up on its own secure_path, so the probe's absolute path is needed there.
 */
export function presumedAgentCommand(conn: SshConnection, agentDir = DEFAULT_AGENT_DIR): string | undefined {
  if (conn.sudo) return undefined;
  const bundle = loadBundle();
  return agentCommand("node", shellDir(`${agentDir}/${folderName(bundle)}`), bundle);
}

/** Whether ensureAgent has deployed (or is deploying) to this host in this process. */
export function deployedHere(conn: SshConnection, agentDir = DEFAULT_AGENT_DIR): boolean {
  return deployed.has(cacheKey(conn, agentDir));
}

/** True when an agent run failed because its files did not match (see BOOT). */
export function isHashMismatch(err: unknown): boolean {
  return err instanceof Error && err.message.includes(HASH_MISMATCH_TEXT);
}
