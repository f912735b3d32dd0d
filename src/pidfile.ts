// Reading a pid file the way systemd reads PIDFile= (issue 14, item 3).
//
// lockmem runs as root and a pid file usually lives in a folder its service can write, so
// the service's user controls what lockmem opens. Seen before these rules: a pid file
// pointing at /etc/shadow copied its first bytes into the error (and from there into the
// Pulumi state on refresh); a FIFO blocked the read forever; /dev/zero was read until
// 615 MB. So:
// - the path is walked as systemd's chase(CHASE_SAFE) walks it: from a folder or symlink
//   owned by a user other than root, the next step must stay with that user; a service
//   user cannot lead lockmem into a file that belongs to someone else;
// - only a regular file is read: the type is checked before opening (a device is never
//   opened) and again on the opened descriptor, opened with O_NONBLOCK so that a FIFO
//   swapped in between cannot block;
// - at most MAX_PID_FILE_BYTES are read;
// - the content is never repeated in an error: messages name the file and what is wrong.
import { constants, promises as fs, Stats } from "fs";
import * as path from "path";
import { LockError } from "./errors";

/** A pid is at most 7 digits (PID_MAX_LIMIT 4194304); 64 bytes leave room for whitespace. */
export const MAX_PID_FILE_BYTES = 64;
/** PID_MAX_LIMIT on 64-bit kernels: no pid is larger. */
const PID_MAX_LIMIT = 4194304;
/** As the kernel's MAXSYMLINKS and systemd's CHASE_MAX. */
const MAX_SYMLINKS = 40;

/** What was read: the pid and who may write the file (for pidFileWarnings). */
export interface PidFileContents {
  file: string;
  pid: number;
  uid: number;
  gid: number;
  mode: number;
}

function refused(file: string, why: string, hint?: string, code: "ENOTARGET" | "EPERM" = "ENOTARGET"): LockError {
  return new LockError({ code, stage: "resolve", field: "target.pidFile", message: `pid file ${file} ${why}`, hint });
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSocket()) return "a socket";
  if (st.isSymbolicLink()) return "a symbolic link";
  return "not a regular file";
}

/** systemd's unsafe_transition(): leaving a non-root owner for another owner. */
function unsafeTransition(from: Stats, to: Stats): boolean {
  return from.uid !== 0 && from.uid !== to.uid;
}

function fsError(file: string, err: unknown): LockError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "ENOTDIR") return refused(file, "does not exist", "the service is probably not running");
  if (code === "EACCES" || code === "EPERM") return refused(file, "cannot be read: permission denied", "run lockmem as root", "EPERM");
  if (code === "ELOOP") return refused(file, `has more than ${MAX_SYMLINKS} symbolic links in its path`);
  return refused(file, `cannot be read: ${code ?? "error"}`);
}

/**
 * Walks `file` component by component (lstat, readlink), refusing a step that leaves a
 * non-root owner for another owner, as systemd's chase(CHASE_SAFE). Returns the path with
 * every symlink resolved.
 */
async function chaseSafe(file: string): Promise<string> {
  // Not path.resolve(): it folds ".." lexically, while the kernel folds it after following
  // symlinks (/var/run/../x is /x when /var/run -> /run); the walk below does as the kernel.
  const absolute = file.startsWith("/") ? file : `${process.cwd()}/${file}`;
  const todo = absolute.split("/").filter((part) => part !== "" && part !== ".");
  let current = "/";
  let previous = await fs.stat("/");
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift() as string;
    const next = name === ".." ? path.dirname(current) : path.join(current, name);
    const st = name === ".." ? await fs.stat(next) : await fs.lstat(next);
    if (unsafeTransition(previous, st)) throw unsafePath(file, previous.uid, next, st.uid);
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) throw Object.assign(new Error("too many symbolic links"), { code: "ELOOP" });
      const destination = await fs.readlink(next);
      todo.unshift(...destination.split("/").filter((part) => part !== "" && part !== "."));
      previous = st;
      if (path.isAbsolute(destination)) {
        // An absolute link starts over from "/": from a user's link, that leaves the user.
        current = "/";
        const root = await fs.stat("/");
        if (unsafeTransition(st, root)) throw unsafePath(file, st.uid, `${next} -> /`, root.uid);
        previous = root;
      }
      continue;
    }
    current = next;
    previous = st;
  }
  return current;
}

function unsafePath(file: string, fromUid: number, to: string, toUid: number): LockError {
  return refused(
    file,
    `is refused: on its path, what uid ${fromUid} owns leads to ${to}, owned by uid ${toUid}; uid ${fromUid} could point lockmem at files it cannot read itself (systemd refuses such PIDFile= paths too)`,
    "keep the pid file in a folder owned by root, or owned by the file's user all the way down, without symbolic links owned by another user",
  );
}

/** "12345\n" -> 12345, as systemd's parse_pid over the file's first line. */
function parsePid(text: string): number | undefined {
  const line = text.split("\n")[0].trim();
  if (!/^[0-9]{1,7}$/.test(line)) return undefined;
  const pid = Number(line);
  return pid >= 1 && pid <= PID_MAX_LIMIT ? pid : undefined;
}

/** Reads the pid in `file` under the rules above; throws a LockError that never quotes the file. */
export async function readPidFile(file: string): Promise<PidFileContents> {
  let real: string;
  try {
    real = await chaseSafe(file);
  } catch (err) {
    if (err instanceof LockError) throw err;
    throw fsError(file, err);
  }
  let before: Stats;
  try {
    before = await fs.stat(real);
  } catch (err) {
    throw fsError(file, err);
  }
  // Checked before opening: opening a device can have effects of its own (a tape rewinds).
  if (!before.isFile()) throw refused(file, `is ${kindOf(before)}, not a regular file`, "give the path of the file the service writes its pid into");
  let handle: fs.FileHandle;
  try {
    // O_NONBLOCK: a FIFO swapped in after the check opens at once instead of blocking;
    // O_NOFOLLOW: the path has no symlink left, and one swapped in now is refused.
    handle = await fs.open(real, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY | constants.O_NOFOLLOW);
  } catch (err) {
    throw fsError(file, err);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile() || st.ino !== before.ino || st.dev !== before.dev) {
      throw refused(file, st.isFile() ? "was replaced while lockmem read it" : `is ${kindOf(st)}, not a regular file`, "run again");
    }
    if (st.size > MAX_PID_FILE_BYTES) {
      throw refused(file, `is ${st.size} bytes long; a pid file holds one pid (at most ${MAX_PID_FILE_BYTES} bytes)`, "give the path of the file the service writes its pid into");
    }
    // One byte more than allowed, so that a file that grew after fstat is seen as too long.
    const buffer = Buffer.alloc(MAX_PID_FILE_BYTES + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    if (bytesRead > MAX_PID_FILE_BYTES) {
      throw refused(file, `is longer than ${MAX_PID_FILE_BYTES} bytes; a pid file holds one pid`);
    }
    const pid = parsePid(buffer.subarray(0, bytesRead).toString("latin1"));
    if (pid === undefined) {
      // Never the content: the file may be one the service user cannot read (issue 14).
      throw refused(
        file,
        bytesRead === 0 ? "is empty: it does not contain a pid" : `does not contain a pid (a decimal number from 1 to ${PID_MAX_LIMIT} on its first line; it holds ${bytesRead} bytes)`,
        "the service may be starting or stopping; otherwise check the path",
      );
    }
    return { file, pid, uid: st.uid, gid: st.gid, mode: st.mode };
  } catch (err) {
    if (err instanceof LockError) throw err;
    throw fsError(file, err);
  } finally {
    await handle.close();
  }
}

/**
 * What to warn about a pid file that someone other than root and the process's owner can
 * write: that user can point lockmem at another process.
 */
export function pidFileWarnings(read: PidFileContents, processUid: number): string[] {
  const warnings: string[] = [];
  const who = `the owner of process ${read.pid} (uid ${processUid})`;
  if (read.uid !== 0 && read.uid !== processUid) {
    warnings.push(`pid file ${read.file} belongs to uid ${read.uid}, neither root nor ${who}: that user can make lockmem act on another process`);
  }
  if ((read.mode & 0o002) !== 0) {
    warnings.push(`pid file ${read.file} is writable by every user: anyone can make lockmem act on another process`);
  } else if ((read.mode & 0o020) !== 0 && read.gid !== 0) {
    warnings.push(`pid file ${read.file} is writable by group ${read.gid}: its members can make lockmem act on another process`);
  }
  return warnings;
}
