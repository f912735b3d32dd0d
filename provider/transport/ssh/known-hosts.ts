// Host keys: the `hostKey` connection field (one OpenSSH public key line) and OpenSSH
// known_hosts files (plain and hashed host names, [host]:port, wildcards, @revoked), and
// the policy a dial checks the key a host presents against.
import * as crypto from "crypto";
import * as fs from "fs";
import { Endpoint, usage } from "./settings";
import { TransportError } from "../types";

export interface HostKey {
  /** "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", ... */
  type: string;
  /** The key blob in SSH wire format, as the server sends it. */
  blob: Buffer;
}

export interface KnownKeys {
  accepted: HostKey[];
  revoked: HostKey[];
}

/** "SHA256:..." as `ssh-keygen -lf` prints it. */
export function fingerprint(blob: Buffer): string {
  return "SHA256:" + crypto.createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
}

/** The key type written inside a blob (its first SSH string). */
export function blobType(blob: Buffer): string {
  if (blob.length < 4) return "unknown";
  const len = blob.readUInt32BE(0);
  return len > 0 && 4 + len <= blob.length ? blob.subarray(4, 4 + len).toString("latin1") : "unknown";
}

/** Parses "type base64 [comment]"; returns undefined for anything else. */
export function parseKeyLine(line: string): HostKey | undefined {
  const parts = line.trim().split(/\s+/);
  if (parts.length < 2 || !/^[A-Za-z0-9+/]+={0,2}$/.test(parts[1])) return undefined;
  const blob = Buffer.from(parts[1], "base64");
  if (blobType(blob) !== parts[0]) return undefined;
  return { type: parts[0], blob };
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`, "i");
}

/** OpenSSH matches "[host]:port" for a port other than 22. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith("|1|")) {
    const [, , salt, hash] = field.split("|");
    if (!salt || !hash) return false;
    const mac = crypto.createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64");
    return mac === hash;
  }
  let matched = false;
  for (const pattern of field.split(",")) {
    if (pattern.startsWith("!")) {
      if (globToRegExp(pattern.slice(1)).test(name)) return false;
    } else if (globToRegExp(pattern).test(name)) {
      matched = true;
    }
  }
  return matched;
}

/** The keys a known_hosts text lists for host:port (cert-authority lines are not supported and skipped). */
export function keysFromKnownHosts(text: string, host: string, port: number): KnownKeys {
  const name = knownHostsName(host, port);
  const out: KnownKeys = { accepted: [], revoked: [] };
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    let fields = line.split(/\s+/);
    let marker: string | undefined;
    if (fields[0].startsWith("@")) {
      marker = fields[0];
      fields = fields.slice(1);
    }
    if (fields.length < 3 || marker === "@cert-authority") continue;
    if (!hostFieldMatches(fields[0], name)) continue;
    const key = parseKeyLine(`${fields[1]} ${fields[2]}`);
    if (!key) continue;
    (marker === "@revoked" ? out.revoked : out.accepted).push(key);
  }
  return out;
}

export function readKnownHosts(file: string, host: string, port: number): KnownKeys {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return { accepted: [], revoked: [] };
  }
  return keysFromKnownHosts(text, host, port);
}

/** Host key algorithms to offer for the keys we accept, so the server shows one we can check. */
export function hostKeyAlgorithms(keys: HostKey[]): string[] {
  const algos: string[] = [];
  for (const k of keys) {
    const forType = k.type === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [k.type];
    for (const a of forType) if (!algos.includes(a)) algos.push(a);
  }
  return algos;
}

export interface HostKeyPolicy {
  accept: HostKey[];
  revoked: HostKey[];
  source: string;
  ignore: boolean;
}

export function hostKeyPolicy(e: Endpoint): HostKeyPolicy {
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

/** Why the key a host presented (its blob) is refused under `policy`; undefined when it is accepted. */
export function hostKeyProblem(policy: HostKeyPolicy, key: Buffer, where: string): TransportError | undefined {
  const seen = `${blobType(key)} ${fingerprint(key)}`;
  if (policy.revoked.some((k) => k.blob.equals(key))) {
    return new TransportError({
      code: "EHOSTKEY",
      where,
      message: `the host presented ${seen}, which ${policy.source} marks as @revoked`,
      hint: "do not connect: this key was revoked; ask the host's administrator for its current key",
    });
  }
  if (policy.ignore || policy.accept.some((k) => k.blob.equals(key))) return undefined;
  const expected = policy.accept.map((k) => `${k.type} ${fingerprint(k.blob)}`).join(" or ");
  return new TransportError({
    code: "EHOSTKEY",
    where,
    message: `host key mismatch: the host presented ${seen}, expected ${expected} (from ${policy.source})`,
    hint: `if the host was reinstalled, check its new key out of band and update ${policy.source === "hostKey" ? "hostKey" : policy.source}; otherwise someone may be intercepting the connection`,
  });
}
