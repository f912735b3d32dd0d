// What a host has, as far as deploying the agent is concerned (one remote shell script,
// the probe), and whether that is enough: the architecture and C library the addon needs,
// the host's own Node.js (preferred) or, without it, what the uploaded runtime needs. A
// host below them is refused with a message naming it and what is missing.
import { Client } from "ssh2";
import { Arch, SHIPPED_ARCHES, shippedArchForUname, unameNames } from "../../src/arch";
import { BUNDLE_FILES } from "./bundle";
import { NODE_RUNTIMES, RUNTIME_BINARY, RUNTIME_GLIBC_FLOOR, RuntimeArch, runtimeArch, runtimeFolderName } from "./runtime";
import { SshConnection } from "../transport/ssh";
import { collectOutput } from "../transport/ssh/exec";

export const MIN_NODE_MAJOR = 18;
/** ENONODE: no usable Node.js; ETIMEDOUT: a deployment step passed its deadline; EDEPLOY: anything else. */
export type DeployErrorCode = "ENONODE" | "EDEPLOY" | "ETIMEDOUT";

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

export interface RemoteResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

export function exec(client: Client, command: string, where: string, what: string, timeoutMs: number): Promise<RemoteResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new DeployError("ETIMEDOUT", where, `${what} did not finish within ${timeoutMs} ms`)), timeoutMs);
    client.exec(command, (err, stream) => {
      if (err) {
        clearTimeout(timer);
        return reject(new DeployError("EDEPLOY", where, `cannot run a command for ${what}: ${err.message}`));
      }
      collectOutput(stream, ({ stdout, stderr, exitCode }) => {
        clearTimeout(timer);
        resolve({ stdout, stderr, code: exitCode ?? null });
      });
      stream.end();
    });
  });
}

/** What the host has, as far as deploying the agent is concerned. */
export interface Probe {
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
  /** The bundle folder of the host's architecture exists, and the sha256 of its files. */
  present: boolean;
  hashes: Map<string, string>;
  /** sha256 of the runtime binary per runtime folder name found in the store. */
  runtimes: Map<string, string>;
}

/** The tools the deployed agent's commands use on the host, besides sh. */
const HOST_TOOLS = ["sha256sum", "gzip"];

/**
 * The shell lines that set $f to the bundle folder (a shell word) of the host's `uname -m`,
 * empty for an architecture without one: the probe looks into that folder only.
 */
export function folderOfHostArch(folders: Partial<Record<Arch, string>>): string {
  const cases = (Object.keys(folders) as Arch[]).map((a) => `${unameNames(a).join("|")}) f=${folders[a]};;`);
  return `case "$(uname -m)" in ${cases.join(" ")} *) f=;; esac`;
}

/**
 * The probe's line "libc=<first line of what names the C library>". getconf and ldd (libc-bin)
 * may be missing on a glibc host (busybox systems: the arm64 guest has neither); glibc's
 * libc.so.6 run as a program prints "GNU C Library (...) stable release version 2.36." then.
 * A missing tool's "not found" must not become the line (it was: "sh: ldd: not found").
 */
export const LIBC_PROBE = [
  'libc=$( { getconf GNU_LIBC_VERSION || { command -v ldd >/dev/null && ldd --version 2>&1; } ||',
  '  for l in /lib/*-linux-gnu*/libc.so.6 /lib64/libc.so.6 /usr/lib64/libc.so.6 /usr/lib/*-linux-gnu*/libc.so.6 /usr/lib/libc.so.6; do [ -x "$l" ] && "$l" && break; done; } 2>/dev/null | head -n 1)',
  'printf "libc=%s\\n" "$libc"',
].join("\n");

/** `folders`: the bundle folder (a shell word) of each shipped architecture. */
export async function probe(client: Client, where: string, store: string, folders: Partial<Record<Arch, string>>, timeoutMs: number): Promise<Probe> {
  const runtimeNames = (Object.keys(NODE_RUNTIMES) as RuntimeArch[]).map(runtimeFolderName);
  const script = [
    'printf "home=%s\\nuid=%s\\narch=%s\\n" "$HOME" "$(id -u)" "$(uname -m)"',
    LIBC_PROBE,
    `for t in ${HOST_TOOLS.join(" ")}; do command -v "$t" >/dev/null 2>&1 || echo "missing=$t"; done`,
    'if p=$(command -v node); then printf "node=%s\\nversion=%s\\n" "$p" "$("$p" -v 2>/dev/null)"; fi',
    `for r in ${runtimeNames.join(" ")}; do if [ -f ${store}/"$r"/${RUNTIME_BINARY} ]; then echo "runtime=$r $(sha256sum < ${store}/"$r"/${RUNTIME_BINARY})"; fi; done`,
    folderOfHostArch(folders),
    `if [ -n "$f" ] && cd "$f" 2>/dev/null; then echo present=1; sha256sum ${BUNDLE_FILES.join(" ")} 2>/dev/null; fi`,
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

/**
 * The host's architecture and C library against the addons the package ships; returns the
 * architecture whose bundle the host gets.
 */
export function checkHost(p: Probe, where: string): Arch {
  const arch = shippedArchForUname(p.arch);
  if (!arch) {
    const supported = SHIPPED_ARCHES.map((a) => unameNames(a)[0]).join(", ");
    throw new DeployError("EDEPLOY", where, `the lockmem agent has native addons for ${supported} only, and this host is ${p.arch || "of an unknown architecture"}`, `lock processes on ${supported} hosts, or install lockmem there yourself and set agent: { install: "never", path: "/path/to/lockmem" }`);
  }
  const glibc = glibcVersion(p.libc);
  if (/musl/i.test(p.libc) || (glibc && !versionAtLeast(glibc, ADDON_GLIBC_FLOOR))) {
    throw new DeployError("EDEPLOY", where, `the lockmem agent's addon needs glibc >= ${ADDON_GLIBC_FLOOR}, and this host has ${p.libc || "no glibc"}`, "use a host with a glibc-based Linux distribution");
  }
  return arch;
}

export const nodeFix = `install Node.js ${MIN_NODE_MAJOR} or later on the host (e.g. \`apt-get install nodejs\` or a NodeSource package) so that \`node\` is on the PATH of SSH sessions, or install lockmem there yourself and set agent: { install: "never", path: "/path/to/lockmem" }`;

/** The host's own node when it can run the agent: preferred, nothing to upload. */
export function usableHostNode(p: Probe): string | undefined {
  return p.node && supportedNode(p.nodeVersion) ? p.node : undefined;
}

/**
 * Whether the pinned runtime can run on this host (no Node.js >= 18 there); throws what
 * is missing otherwise.
 */
export function checkRuntimeHost(p: Probe, conn: SshConnection, where: string): RuntimeArch {
  const has = p.node ? `${p.node} is ${p.nodeVersion || "a version that does not run"}` : "`node` is not on the PATH of SSH sessions";
  if (conn.sudo) {
    // sudo runs the agent as root: the binary it runs must be one the SSH user cannot
    // change, and an uploaded runtime lives in that user's folder.
    throw new DeployError("ENONODE", where, `with sudo: true the lockmem agent runs with the host's own Node.js >= ${MIN_NODE_MAJOR} (a root-owned binary), and ${has}`, `${nodeFix}; or connect as root, which lets lockmem bring its own Node.js runtime`);
  }
  const arch = runtimeArch(p.arch)!;
  const glibc = glibcVersion(p.libc);
  if (!glibc || !versionAtLeast(glibc, RUNTIME_GLIBC_FLOOR)) {
    throw new DeployError("ENONODE", where, `the host has no Node.js >= ${MIN_NODE_MAJOR} (${has}) and the Node.js runtime lockmem brings needs glibc >= ${RUNTIME_GLIBC_FLOOR}, while this host has ${p.libc || "no glibc that getconf, ldd or libc.so.6 reports"}`, nodeFix);
  }
  if (p.missing.length > 0) {
    throw new DeployError("ENONODE", where, `the host has no Node.js >= ${MIN_NODE_MAJOR} (${has}), and running the Node.js runtime lockmem brings needs ${p.missing.join(" and ")}, which the PATH of SSH sessions lacks`, `install ${p.missing.join(" and ")} (coreutils, gzip) on the host, or ${nodeFix}`);
  }
  return arch;
}
