// Where a session's journal lives and how its files are written, read and removed: under
// <state dir>/journal/, `<pid>-<startTime>-<tid>.json` (the header, format.ts) and `.regs`
// beside it (the addon's, native/journal.h). Both appear complete or not at all (temporary
// file, then rename).
import { promises as fs } from "fs";
import * as path from "path";
import { LockError } from "../errors";
import { SyscallOp } from "../native";
import { isDecimalName, secureStateDir } from "../state-dir";
import { newJournalHeader } from "./format";

export interface JournalFiles {
  json: string;
  regs: string;
}

function journalDir(): string {
  return secureStateDir("journal");
}

export function journalFiles(pid: number, tid: number, startTime: string): JournalFiles {
  if (!isDecimalName(startTime)) throw new Error(`invalid start time ${JSON.stringify(startTime)} for a journal`);
  const base = path.join(journalDir(), `${pid}-${startTime}-${tid}`);
  return { json: `${base}.json`, regs: `${base}.regs` };
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The header, complete and durable (temporary file, fsync, rename) before the addon touches anything. */
export async function writeJournalHeader(files: JournalFiles, header: { pid: number; tid: number; startTime: string; ops: SyscallOp[] }): Promise<void> {
  const body = newJournalHeader(header);
  const tmp = `${files.json}.tmp`;
  const handle = await fs.open(tmp, "w", 0o600);
  try {
    await handle.writeFile(JSON.stringify(body) + "\n");
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, files.json);
  await fsyncDir(path.dirname(files.json));
}

export async function removeJournal(files: JournalFiles): Promise<void> {
  await fs.rm(files.regs, { force: true });
  await fs.rm(files.json, { force: true });
}

/** A journal file's text, never through a link; undefined when it is not there. */
export async function readText(file: string): Promise<string | undefined> {
  try {
    const handle = await fs.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      return await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** A file that is not what lockmem writes: kept as `<file>.invalid`, never acted on. */
export async function setAside(file: string): Promise<void> {
  await fs.rename(file, `${file}.invalid`).catch(() => undefined);
}

/** The journals left in the state dir (optionally of one pid), by file name. */
export async function journalNames(pid?: number): Promise<{ dir: string; names: string[] }> {
  let dir: string;
  let names: string[];
  try {
    dir = journalDir();
    names = await fs.readdir(dir);
  } catch (err) {
    if (err instanceof LockError) throw err; // an unsafe state dir: never silently "nothing"
    // No journal, or not ours to read (a non-root agent: it cannot have written one).
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EACCES" || code === "EPERM") return { dir: "", names: [] };
    throw err;
  }
  return { dir, names: names.filter((n) => n.endsWith(".json") && (pid === undefined || n.startsWith(`${pid}-`))).sort() };
}
