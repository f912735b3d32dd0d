// lockmem's state directory on a host (default /run/lockmem): crash journals, raised
// RLIMIT_MEMLOCK records and per-target lock files. What is read back from it decides
// which syscalls run in a target and which limit a process gets, so it is trusted only
// when nobody but root (or, for a run as another user, that user) could have written it:
// every folder from / down to it must be owned by root or by us and not writable by
// group or others (a sticky world-writable folder such as /tmp is fine above it: nobody
// can replace our entry there). Anything else is refused before any target is touched.
import * as fs from "fs";
import { promises as fsp } from "fs";
import * as path from "path";
import { LockError } from "./errors";

export type StateArea = "journal" | "limits" | "locks" | "last-lock";

/** LOCKMEM_STATE_DIR, else /run/lockmem for root and a per-user runtime folder otherwise. */
export function stateDir(): string {
  if (process.env.LOCKMEM_STATE_DIR) return path.resolve(process.env.LOCKMEM_STATE_DIR);
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return "/run/lockmem";
  const runtime = process.env.XDG_RUNTIME_DIR ?? `/run/user/${uid}`;
  return fs.existsSync(runtime) ? path.join(runtime, "lockmem") : `/tmp/lockmem-${uid}`;
}

const STICKY = 0o1000;

function unsafe(dir: string, why: string): LockError {
  return new LockError({
    code: "EPERM",
    stage: "state-dir",
    message: `lockmem's state directory is not safe to trust: ${why}; no process was touched`,
    hint: `lockmem keeps crash journals and limit records in ${dir} (LOCKMEM_STATE_DIR): make every folder on its path owned by root (or the user lockmem runs as) and not writable by group or others, e.g. \`chown root: ${dir} && chmod 0700 ${dir}\``,
  });
}

/** Refuses a folder someone other than root or us could have written into. */
function checkFolder(dir: string, uid: number, isStateFolder: boolean, stateRoot: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    throw unsafe(stateRoot, `cannot inspect ${dir}: ${(err as Error).message}`);
  }
  if (st.isSymbolicLink() && isStateFolder) throw unsafe(stateRoot, `${dir} is a symbolic link`);
  if (!st.isDirectory() && !st.isSymbolicLink()) throw unsafe(stateRoot, `${dir} is not a directory`);
  if (st.uid !== 0 && st.uid !== uid) throw unsafe(stateRoot, `${dir} is owned by uid ${st.uid}`);
  const writableByOthers = (st.mode & 0o022) !== 0;
  if (writableByOthers && (isStateFolder || (st.mode & STICKY) === 0)) {
    throw unsafe(stateRoot, `${dir} is writable by ${st.mode & 0o002 ? "everyone" : "its group"} (mode ${(st.mode & 0o7777).toString(8)})`);
  }
}

/**
 * The state folder (or one area of it), created 0700 if missing, after checking that the
 * whole chain is ours. Throws EPERM (stage "state-dir") naming the folder and the fix.
 */
export function secureStateDir(area?: StateArea): string {
  const root = stateDir();
  const uid = process.getuid?.() ?? 0;
  const target = area ? path.join(root, area) : root;
  for (const dir of [root, target]) {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new LockError({
        code: code === "EACCES" || code === "EPERM" || code === "EROFS" ? "EPERM" : "EINTERNAL",
        stage: "state-dir",
        message: `cannot create lockmem's state directory ${dir}: ${(err as Error).message}; no process was touched`,
        hint: uid === 0 ? `make ${path.dirname(dir)} writable for root, or set LOCKMEM_STATE_DIR` : `lockmem runs as uid ${uid}: set LOCKMEM_STATE_DIR to a folder of yours, or run it as root`,
      });
    }
  }
  // Ancestors: links are resolved by the kernel, so check what they resolve to as well.
  const chain: string[] = [];
  for (let dir = path.dirname(fs.realpathSync(root)); ; dir = path.dirname(dir)) {
    chain.push(dir);
    if (path.dirname(dir) === dir) break;
  }
  for (const dir of chain) checkFolder(dir, uid, false, root);
  checkFolder(root, uid, true, root);
  if (target !== root) checkFolder(target, uid, true, root);
  return target;
}

/**
 * A file name part read back from the state dir or a journal, checked before it goes into
 * a path: digits only (pids, thread ids, start times in clock ticks).
 */
export function isDecimalName(value: unknown): value is string {
  return typeof value === "string" && /^[0-9]{1,20}$/.test(value);
}

/**
 * A JSON record read back from the state dir: absent (undefined), what `validate` accepts,
 * or, when it rejects it (returning why), set aside as `<file>.invalid` and never used.
 */
export async function readStateRecord<T>(file: string, validate: (raw: unknown) => T | string): Promise<{ record?: T; rejected?: string }> {
  let text: string;
  try {
    const handle = await fsp.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      text = await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const record = validate(parsed);
  if (typeof record !== "string") return { record };
  // Never acted on; kept aside for whoever investigates.
  await fsp.rename(file, `${file}.invalid`).catch(() => undefined);
  return { rejected: record };
}
