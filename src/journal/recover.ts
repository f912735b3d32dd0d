// Recovery of interrupted sessions. If lockmem dies between writing a journal and removing
// it, the target is left group-stopped (never running on our registers) and
// `recoverInterrupted` finishes the job: puts the registers back, completes the batch,
// continues the process only if it was running before. It runs in the guardian the moment
// the owner dies (src/guardian.ts), at the start of every lock/unlock of that pid, and in
// `lockmem recover`; always under the target's lock, so never beside a live session: a
// journal whose lock is free has no live owner.
import { promises as fs } from "fs";
import * as path from "path";
import { native } from "../native";
import { syscallsReturningEintrOnStop } from "../proc/tasks";
import { DEFAULT_TARGET_WAIT_MS, isTargetLocked, pruneStaleLocks, withTargetLocks } from "../target-lock";
import { JournalFiles, journalFiles, journalNames, readText, removeJournal, setAside } from "./files";
import { JOURNAL_NAME, JournalHeader, journalOpsToSyscalls, parseRegsFile, RegsFile, validateJournalHeader } from "./format";
import { currentState, waitUntilStopTaken, waitUntilUntraced, waitWhileInKernel } from "./settle";

export interface RecoveryResult {
  pid: number;
  tid: number;
  /**
   * What was done: "restored" (registers put back, batch completed), "continued" (only
   * SIGCONT), "dropped" (nothing to do), "refused" (the journal is not one lockmem wrote:
   * set aside, nothing run).
   */
  outcome: "restored" | "continued" | "dropped" | "refused";
  detail: string;
}

/** An interrupted session whose journal passed every check, and what recovery does with it. */
interface Interrupted {
  header: JournalHeader;
  files: JournalFiles;
  regs: RegsFile;
  /** A stop someone else asked for during the run is honoured as if it had come before. */
  stayStopped: boolean;
}

function resultOf(header: Pick<JournalHeader, "pid" | "tid">, outcome: RecoveryResult["outcome"], detail: string): RecoveryResult {
  return { pid: header.pid, tid: header.tid, outcome, detail };
}

/** The header of the journal `name`; a refusal when lockmem did not write it (set aside); undefined when it is gone. */
async function readHeader(dir: string, name: string): Promise<JournalHeader | RecoveryResult | undefined> {
  const json = path.join(dir, name);
  const text = await readText(json);
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const m = JOURNAL_NAME.exec(name)!;
  const header = validateJournalHeader(parsed, name);
  if (typeof header === "string") {
    await setAside(json);
    return { pid: Number(m[1]), tid: Number(m[3]), outcome: "refused", detail: `${json} is not a journal lockmem wrote (${header}): set aside as ${name}.invalid, nothing was run` };
  }
  return header;
}

async function recoverOne(dir: string, name: string): Promise<RecoveryResult | undefined> {
  const header = await readHeader(dir, name);
  if (header === undefined || "outcome" in header) return header;
  const files = journalFiles(header.pid, header.tid, header.startTime);
  // Temporary files of a run killed while writing its journal (it holds the target lock
  // while it writes, and we hold it now: nobody is writing them).
  await fs.rm(`${files.json}.tmp`, { force: true });
  await fs.rm(`${files.regs}.tmp`, { force: true });
  const state = await currentState(header.pid, header.startTime);
  if (state === undefined || state === "Z" || state === "X") {
    await removeJournal(files);
    return resultOf(header, "dropped", "the process is gone");
  }
  const regsText = await readText(files.regs);
  if (regsText === undefined) {
    // The addon never started (its file appears complete or not at all): nothing changed.
    await removeJournal(files);
    return resultOf(header, "dropped", "the interrupted run had not touched the process");
  }
  const regs = parseRegsFile(regsText, header);
  if (typeof regs === "string") {
    await setAside(files.regs);
    await setAside(path.join(dir, name));
    return resultOf(header, "refused", `${files.regs} is not a journal lockmem wrote (${regs}): set aside, nothing was run`);
  }
  await waitUntilUntraced(header.pid, 2000);
  await waitUntilStopTaken(header.pid, 2000);
  const run: Interrupted = { header, files, regs, stayStopped: regs.wasStopped || regs.foreignStop };
  if (!regs.regs || regs.restored) return undoStop(run);
  return restoreRegisters(run, regs.regs);
}

/**
 * Registers never changed, or already back: only the stop may be ours to undo, and the
 * calls it interrupted (epoll_wait...) to re-issue before the process goes on.
 */
async function undoStop({ header, files, regs, stayStopped }: Interrupted): Promise<RecoveryResult> {
  // Whatever the state reads now: our SIGSTOP may still be on its way (the group stop
  // completes after the kill), and the SIGCONT that follows also discards a pending one.
  if (!stayStopped) {
    await native().undoStop({
      pid: header.pid,
      eintrSyscalls: syscallsReturningEintrOnStop(),
      ...(regs.blockedCalls !== undefined ? { blockedCalls: regs.blockedCalls } : {}),
    });
  }
  await removeJournal(files);
  const then = stayStopped ? `left the process stopped (${regs.wasStopped ? "as it was" : "someone else stopped it meanwhile"})` : "continued the process";
  return resultOf(header, "continued", `${regs.restored ? "registers were already restored" : "stopped before any register changed"}; ${then}`);
}

/** Our registers may still be in the thread: put the journaled ones back and complete the batch. */
async function restoreRegisters({ header, files, regs, stayStopped }: Interrupted, savedRegs: Buffer): Promise<RecoveryResult> {
  // The guardian can get here while the held thread is still inside our injected call (an
  // mlock of gigabytes takes seconds), running (R) or faulting pages in (D): the group stop
  // takes it when the call returns. Wait for that before judging the process "running".
  const settled = await waitWhileInKernel(header.pid, header.tid, 60_000);
  if (settled !== "T") {
    // Never write old registers into a running thread: it has moved on (or was continued
    // by someone else while it held our registers, which no journal can undo).
    await removeJournal(files);
    return resultOf(header, "dropped", `the process is running (state ${settled}); its registers were left alone`);
  }
  await native().recover({
    pid: header.pid,
    tid: header.tid,
    ...(await vdsoRange(header.pid)),
    ops: journalOpsToSyscalls(header.ops),
    eintrSyscalls: syscallsReturningEintrOnStop(),
    journalPath: files.regs,
    regs: savedRegs,
    stayStopped,
    ...(regs.sigmask !== undefined ? { sigmask: regs.sigmask } : {}),
    ...(regs.blockedCalls !== undefined ? { blockedCalls: regs.blockedCalls } : {}),
  });
  await removeJournal(files);
  return resultOf(header, "restored", `registers put back, ${header.ops.length} call(s) completed, process ${regs.wasStopped ? "left stopped as it was" : regs.foreignStop ? "left stopped (someone else stopped it meanwhile)" : "continued"}`);
}

async function vdsoRange(pid: number): Promise<{ vdsoStart: bigint; vdsoEnd: bigint }> {
  const maps = await fs.readFile(`/proc/${pid}/maps`, "utf8");
  const line = maps.split("\n").find((l) => l.endsWith("[vdso]"));
  if (!line) return { vdsoStart: 0n, vdsoEnd: 0n };
  const [start, end] = line.split(" ")[0].split("-");
  return { vdsoStart: BigInt("0x" + start), vdsoEnd: BigInt("0x" + end) };
}

export interface RecoverOptions {
  /** Only journals of sessions this lockmem process owned (the guardian's filter). */
  owner?: number;
  /** How long to wait for a live lockmem that works on the same target. */
  waitMs?: number;
}

/** Finishes or undoes every interrupted injection (of `pid` only, when given). */
export async function recoverInterrupted(pid?: number, opts: RecoverOptions = {}): Promise<RecoveryResult[]> {
  const { dir, names } = await journalNames(pid);
  const results: RecoveryResult[] = [];
  for (const name of names) {
    const m = JOURNAL_NAME.exec(name);
    if (!m) {
      await setAside(path.join(dir, name));
      results.push({ pid: 0, tid: 0, outcome: "refused", detail: `${path.join(dir, name)} is not a journal lockmem wrote (its file name): set aside, nothing was run` });
      continue;
    }
    if (opts.owner !== undefined && !(await ownedBy(path.join(dir, name), opts.owner))) continue;
    const r = await withTargetLocks([Number(m[1])], { op: "recover", waitMs: opts.waitMs ?? DEFAULT_TARGET_WAIT_MS }, () => recoverOne(dir, name));
    if (r) results.push(r);
  }
  await removeOrphanRegs(dir);
  // A full recovery (`lockmem recover`, a guardian) also clears the lock files of processes
  // that are gone.
  if (pid === undefined) pruneStaleLocks();
  return results;
}

async function ownedBy(json: string, owner: number): Promise<boolean> {
  try {
    return (JSON.parse((await readText(json)) ?? "null") as { owner?: unknown } | null)?.owner === owner;
  } catch {
    return false;
  }
}

/** `.regs` files whose header is gone (nothing to recover with them), once no session can own them. */
async function removeOrphanRegs(dir: string): Promise<void> {
  if (!dir) return;
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const m = /^([0-9]{1,10})-([0-9]{1,20})-([0-9]{1,10})\.(regs|json\.tmp|regs\.tmp)$/.exec(name);
    if (!m || (m[4] === "regs" && names.includes(name.replace(/\.regs$/, ".json")))) continue;
    // Held by this very operation (the recovery at the start of a lock) is fine: we are
    // not writing it. Held by someone else: it may be theirs, being written.
    if (isTargetLocked(Number(m[1]), undefined, true)) continue;
    await fs.rm(path.join(dir, name), { force: true });
  }
}
