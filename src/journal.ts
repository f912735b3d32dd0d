// Crash recovery. Before every injection lockmem writes a journal under
// <state dir>/journal/: `<base>.json` (this file's side: who and which calls) and
// `<base>.regs` (written by the addon: whether the process was stopped before, the saved
// registers, and "restored=1" once they are back). If lockmem dies in between, the target
// is left group-stopped (never running on our registers) and `recoverTarget` — run at the
// start of every lockmem operation on that pid, and by `lockmem recover` — finishes the
// job: puts the registers back, completes (or undoes) the batch, continues the process
// only if it was running before.
import { promises as fs } from "fs";
import * as path from "path";
import { native, SyscallOp } from "./native";
import { readStat } from "./proc/stat";
import { syscallsReturningEintrOnStop } from "./proc/tasks";
import { stateDir } from "./limitStore";

interface JournalOp {
  nr: number;
  args: string[];
  undo?: { nr: number; args: string[] };
}

interface JournalHeader {
  v: 1;
  pid: number;
  tid: number;
  startTime: string;
  ops: JournalOp[];
  at: string;
}

export interface RecoveryResult {
  pid: number;
  tid: number;
  /** What was done: "restored" (registers put back, batch completed), "continued" (only SIGCONT), "dropped" (nothing to do). */
  outcome: "restored" | "continued" | "dropped";
  detail: string;
}

function journalDir(): string {
  return path.join(stateDir(), "journal");
}

export interface JournalFiles {
  json: string;
  regs: string;
}

export function journalFiles(pid: number, tid: number, startTime: string): JournalFiles {
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

/** The header, durable before the addon touches anything. */
export async function writeJournalHeader(files: JournalFiles, header: Omit<JournalHeader, "v" | "at" | "ops"> & { ops: SyscallOp[] }): Promise<void> {
  await fs.mkdir(journalDir(), { recursive: true, mode: 0o700 });
  const body: JournalHeader = {
    v: 1,
    pid: header.pid,
    tid: header.tid,
    startTime: header.startTime,
    at: new Date().toISOString(),
    ops: header.ops.map((op) => ({
      nr: op.nr,
      args: op.args.map(String),
      ...(op.undo ? { undo: { nr: op.undo.nr, args: op.undo.args.map(String) } } : {}),
    })),
  };
  const handle = await fs.open(files.json, "w", 0o600);
  try {
    await handle.writeFile(JSON.stringify(body) + "\n");
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fsyncDir(journalDir());
}

export async function removeJournal(files: JournalFiles): Promise<void> {
  await fs.rm(files.regs, { force: true });
  await fs.rm(files.json, { force: true });
}

interface RegsFile {
  wasStopped: boolean;
  regs?: Buffer;
  /** The thread's own signal mask, when the run blocked its signals (v=2 journals). */
  sigmask?: bigint;
  /** Someone else's stop signal arrived during the run: the process must stay stopped. */
  foreignStop: boolean;
  restored: boolean;
}

function parseRegsFile(text: string): RegsFile {
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const regsHex = fields.get("regs");
  const maskHex = fields.get("sigmask");
  return {
    wasStopped: fields.get("wasStopped") === "1",
    // Dashes until the addon saved them.
    regs: regsHex && regsHex.length === native().regsSize * 2 && /^[0-9a-f]+$/.test(regsHex) ? Buffer.from(regsHex, "hex") : undefined,
    sigmask: maskHex && /^[0-9a-f]{16}$/.test(maskHex) ? BigInt("0x" + maskHex) : undefined,
    foreignStop: fields.get("foreignStop") === "1",
    restored: fields.get("restored") === "1",
  };
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function currentState(pid: number, startTime: string): Promise<string | undefined> {
  try {
    const stat = await readStat(pid);
    return stat.startTime === startTime ? stat.state : undefined;
  } catch {
    return undefined;
  }
}

async function recoverOne(json: string): Promise<RecoveryResult | undefined> {
  const text = await readText(json);
  if (text === undefined) return undefined;
  let header: JournalHeader;
  try {
    header = JSON.parse(text) as JournalHeader;
  } catch {
    // A header is written before anything is touched: a torn one means nothing happened.
    await fs.rm(json, { force: true });
    return undefined;
  }
  const files = journalFiles(header.pid, header.tid, header.startTime);
  const regsText = await readText(files.regs);
  const state = await currentState(header.pid, header.startTime);
  const result = (outcome: RecoveryResult["outcome"], detail: string): RecoveryResult => ({ pid: header.pid, tid: header.tid, outcome, detail });
  if (state === undefined || state === "Z" || state === "X") {
    await removeJournal(files);
    return result("dropped", "the process is gone");
  }
  if (regsText === undefined) {
    // The addon never started: nothing was changed.
    await removeJournal(files);
    return result("dropped", "the interrupted run had not touched the process");
  }
  const regs = parseRegsFile(regsText);
  // A stop someone else asked for during the run is honoured as if it had come before.
  const stayStopped = regs.wasStopped || regs.foreignStop;
  if (!regs.regs || regs.restored) {
    // Registers never changed, or already back: only the stop may be ours to undo, and
    // the calls it interrupted (epoll_wait...) to re-issue before the process goes on.
    // Whatever the state reads now: our SIGSTOP may still be on its way (the group stop
    // completes after the kill), and the SIGCONT that follows also discards a pending one.
    if (!stayStopped) {
      await native().runBatch({
        pid: header.pid,
        tid: header.tid,
        vdsoStart: 0n,
        vdsoEnd: 0n,
        ops: [],
        stopOnError: true,
        stopProcess: true,
        continueOnly: true,
        eintrSyscalls: syscallsReturningEintrOnStop(),
      });
    }
    await removeJournal(files);
    const then = stayStopped ? `left the process stopped (${regs.wasStopped ? "as it was" : "someone else stopped it meanwhile"})` : "continued the process";
    return result("continued", `${regs.restored ? "registers were already restored" : "stopped before any register changed"}; ${then}`);
  }
  if (state !== "T") {
    // Never write old registers into a running thread: it has moved on (or was continued
    // by someone else while it held our registers, which no journal can undo).
    await removeJournal(files);
    return result("dropped", `the process is running (state ${state}); its registers were left alone`);
  }
  await native().runBatch({
    pid: header.pid,
    tid: header.tid,
    ...(await vdsoRange(header.pid)),
    ops: header.ops.map((op) => ({
      nr: op.nr,
      args: op.args.map((a) => BigInt(a)),
      ...(op.undo ? { undo: { nr: op.undo.nr, args: op.undo.args.map((a) => BigInt(a)) } } : {}),
    })),
    stopOnError: true,
    stopProcess: true,
    eintrSyscalls: syscallsReturningEintrOnStop(),
    journalPath: files.regs,
    restoreRegs: regs.regs,
    recoveredWasStopped: stayStopped,
    ...(regs.sigmask !== undefined ? { restoreSigmask: regs.sigmask } : {}),
  });
  await removeJournal(files);
  return result("restored", `registers put back, ${header.ops.length} call(s) completed, process ${regs.wasStopped ? "left stopped as it was" : regs.foreignStop ? "left stopped (someone else stopped it meanwhile)" : "continued"}`);
}

async function vdsoRange(pid: number): Promise<{ vdsoStart: bigint; vdsoEnd: bigint }> {
  const maps = await fs.readFile(`/proc/${pid}/maps`, "utf8");
  const line = maps.split("\n").find((l) => l.endsWith("[vdso]"));
  if (!line) return { vdsoStart: 0n, vdsoEnd: 0n };
  const [start, end] = line.split(" ")[0].split("-");
  return { vdsoStart: BigInt("0x" + start), vdsoEnd: BigInt("0x" + end) };
}

/** Finishes or undoes every interrupted injection (of `pid` only, when given). */
export async function recoverInterrupted(pid?: number): Promise<RecoveryResult[]> {
  let names: string[];
  try {
    names = await fs.readdir(journalDir());
  } catch (err) {
    // No journal, or not ours to read (a non-root agent: it cannot have written one).
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EACCES" || code === "EPERM") return [];
    throw err;
  }
  const results: RecoveryResult[] = [];
  for (const name of names.filter((n) => n.endsWith(".json")).sort()) {
    if (pid !== undefined && !name.startsWith(`${pid}-`)) continue;
    const r = await recoverOne(path.join(journalDir(), name));
    if (r) results.push(r);
  }
  return results;
}
