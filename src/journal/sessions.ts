// Sessions whose owner died: what status and doctor show about a process that a dead
// lockmem run may have left stopped.
import * as path from "path";
import { isTargetLocked } from "../target-lock";
import { journalNames, readText } from "./files";
import { isPid, JOURNAL_NAME, JournalHeader } from "./format";

export interface HeldByDeadRun {
  tid: number;
  owner?: number;
  since?: string;
}

/**
 * Sessions on `pid` whose lockmem died before finishing (journal present, target lock
 * free): the target may be stopped, waiting for its guardian or the next run to recover it.
 */
export async function deadSessions(pid: number): Promise<HeldByDeadRun[]> {
  const { dir, names } = await journalNames(pid);
  if (names.length === 0 || isTargetLocked(pid)) return [];
  const out: HeldByDeadRun[] = [];
  for (const name of names) {
    const m = JOURNAL_NAME.exec(name);
    if (!m) continue;
    let header: Partial<JournalHeader> = {};
    try {
      const parsed: unknown = JSON.parse((await readText(path.join(dir, name))) ?? "{}");
      // Anything but an object (null, a number: a damaged or forged file) is shown without owner.
      if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) header = parsed as Partial<JournalHeader>;
    } catch {
      // shown without owner
    }
    out.push({ tid: Number(m[3]), ...(isPid(header.owner) ? { owner: header.owner } : {}), ...(typeof header.at === "string" ? { since: header.at } : {}) });
  }
  return out;
}
