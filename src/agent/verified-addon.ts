// The agent bundle runs exactly the addon bytes its bootstrap hashed (issue 14, item 1).
//
// The bootstrap (provider/agent/command.ts) reads lockmem.node once, checks its sha256 and
// hands the Buffer over; it is loaded here, at agent start, before the first request is
// read. Loading the file by its path instead, later (the first plan or lock), let anyone who
// could write the folder swap a .so in after the check, and a deleted file made the old
// loader search build/Release folders above it. Node has no memfd_create, so the checked
// bytes go to a file nobody else can reach, and dlopen opens it through our own descriptor
// (/proc/self/fd/N, a magic link to that inode, whatever its name becomes meanwhile):
// - O_TMPFILE: an inode with no name at all (Linux >= 3.11; ext4, xfs, btrfs, tmpfs), or
// - where the file system has no O_TMPFILE (NFS, ...): a new 0700 folder of ours, a file
//   created there with O_EXCL|O_NOFOLLOW (so it is our new inode, mode 0700, writable by
//   our uid only), unlinked before dlopen.
// Either way it lives in the bundle folder, whose file system must allow exec anyway.
// dlopen reads the inode we wrote; only our uid (or root) could write to it.
import * as fs from "fs";
import * as path from "path";
import { LockError } from "../errors";
import { IN_AGENT_BUNDLE, NativeAddon, useAddon } from "../native";

/** Where the bootstrap leaves what it checked: { dir, addon }. */
export const BOOTSTRAP_KEY = Symbol.for("lockmem.agent.bootstrap");

export interface BootstrapHandover {
  /** The bundle folder the files were read from. */
  dir: string;
  /** The addon's bytes, sha256 checked. */
  addon: Buffer;
}

/** The bundle folder the bootstrap checked and loaded from, once loadVerifiedAddon ran in the bundle. */
let verifiedDir: string | undefined;

export function verifiedBundleDir(): string | undefined {
  return verifiedDir;
}

/** Linux's O_TMPFILE (__O_TMPFILE | O_DIRECTORY; O_DIRECTORY differs between x86_64 and arm64). */
const O_TMPFILE = 0o20000000 | fs.constants.O_DIRECTORY;

function refuse(message: string, hint: string): LockError {
  return new LockError({ code: "EPERM", message, hint });
}

/**
 * Why `dir` or a folder above it could be changed by someone other than `trusted` uids, or
 * undefined. A folder must belong to a trusted uid and not be group- or world-writable
 * unless sticky (in a sticky folder such as /tmp, others cannot rename or remove our
 * entries). Checked on the real path, symlinks resolved.
 */
export function untrustedFolder(dir: string, trusted: number[]): string | undefined {
  let d = fs.realpathSync(dir);
  for (;;) {
    const st = fs.statSync(d);
    if (!trusted.includes(st.uid)) return `${d} belongs to uid ${st.uid} (trusted: ${trusted.join(", ")})`;
    const writable = st.mode & 0o022;
    if (writable && !(st.mode & 0o1000)) {
      return `${d} is writable by ${st.mode & 0o002 ? "every user" : `group ${st.gid}`} (mode ${(st.mode & 0o7777).toString(8)})`;
    }
    const up = path.dirname(d);
    if (up === d) return undefined;
    d = up;
  }
}

/**
 * The uids a bundle folder may belong to: ours and root's. Under sudo (root, SUDO_UID set)
 * also the user who ran sudo: with `sudo: true` the SSH user uploads the bundle into its own
 * folder and runs the agent as root (with sudo, that user is trusted to run the agent as
 * root in any case); the bytes are still read once and checked, and no uploaded Node runtime
 * is ever used under sudo (provider/agent/deploy.ts).
 */
export function trustedUids(env: NodeJS.ProcessEnv = process.env): number[] {
  const euid = process.geteuid?.() ?? -1;
  const uids = [0, euid];
  const sudoUid = Number(env.SUDO_UID);
  if (euid === 0 && Number.isInteger(sudoUid) && sudoUid > 0) uids.push(sudoUid);
  return [...new Set(uids)];
}

function writeAll(fd: number, data: Buffer): void {
  for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off, data.length - off);
}

/**
 * A descriptor of a new file in `dir` holding `data`, reachable by no name (see the header).
 * `tmpfile: false` takes the path for file systems without O_TMPFILE (tests use it).
 */
export function privateCopy(dir: string, data: Buffer, tmpfile = true): number {
  let fd: number;
  try {
    if (!tmpfile) throw Object.assign(new Error("O_TMPFILE not used"), { code: "EOPNOTSUPP" });
    fd = fs.openSync(dir, O_TMPFILE | fs.constants.O_RDWR, 0o700);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // EOPNOTSUPP: a file system without O_TMPFILE; EISDIR/EINVAL: a kernel without it.
    if (code !== "EOPNOTSUPP" && code !== "EISDIR" && code !== "EINVAL") throw e;
    const sub = fs.mkdtempSync(path.join(dir, ".addon-"));
    const file = path.join(sub, "lockmem.node");
    try {
      fd = fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW | fs.constants.O_RDWR, 0o700);
    } finally {
      fs.rmSync(file, { force: true });
      fs.rmdirSync(sub);
    }
  }
  try {
    writeAll(fd, data);
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/**
 * In the agent bundle: checks the bundle folder chain and loads the addon bytes the
 * bootstrap verified. Elsewhere (the CLI, dist/src/agent/main.js) there is no handover and
 * nothing happens: the package's addon is loaded on first use (src/native.ts).
 */
export function loadVerifiedAddon(): void {
  const g = globalThis as unknown as Record<symbol, BootstrapHandover | undefined>;
  const handover = g[BOOTSTRAP_KEY];
  delete g[BOOTSTRAP_KEY];
  if (!handover) {
    if (IN_AGENT_BUNDLE) {
      throw refuse("the lockmem agent bundle was started without its bootstrap, which checks its files", "run it with the command the provider gives it");
    }
    return;
  }
  const trusted = trustedUids();
  // The bundle folder, and the Node runtime's folder when the provider uploaded the runtime
  // (it sits next to the bundle, in the same store).
  const folders = [handover.dir];
  const store = path.dirname(fs.realpathSync(handover.dir));
  const runtimeDir = path.dirname(fs.realpathSync(process.execPath));
  if (path.dirname(runtimeDir) === store) folders.push(runtimeDir);
  for (const folder of folders) {
    const why = untrustedFolder(folder, trusted);
    if (why) {
      throw refuse(
        `refusing to run the lockmem agent from ${folder}: ${why}, so another user could change what runs`,
        "set agent.dir to a folder that only the SSH user (or root) can write, on every level (e.g. the default ~/.lockmem/agent)",
      );
    }
  }
  const fd = privateCopy(handover.dir, handover.addon);
  try {
    const mod = { exports: {} as NativeAddon };
    process.dlopen(mod, `/proc/self/fd/${fd}`);
    useAddon(mod.exports);
    verifiedDir = fs.realpathSync(handover.dir);
  } finally {
    fs.closeSync(fd);
  }
}
