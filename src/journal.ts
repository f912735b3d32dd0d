// Crash recovery. Before every injection lockmem writes a journal under
// <state dir>/journal/: `<pid>-<startTime>-<tid>.json` (this file's side: who, which
// calls, which lockmem process owns the session) and `.regs` beside it (written by the
// addon, native/journal.h: whether the process was stopped before, the saved registers,
// and "restored=1" once they are back). Both appear complete or not at all (temporary
// file, then rename). If lockmem dies in between, the target is left group-stopped (never
// running on our registers) and `recoverInterrupted` finishes the job: puts the registers
// back, completes the batch, continues the process only if it was running before. It runs
// in the guardian the moment the owner dies (src/guardian.ts), at the start of every
// lock/unlock of that pid, and in `lockmem recover`; always under the target's lock, so
// never beside a live session: a journal whose lock is free has no live owner.
//
// A journal decides which syscalls run in a target and which registers it gets back, so
// nothing in it is trusted beyond the state dir check (src/state-dir.ts): names must be
// what lockmem writes, every field must have the type and range lockmem writes, and the
// calls must be exactly the mlock family with the arguments a plan would use. Anything
// else is set aside (`.invalid`) and reported, never run.
import { promises as fs } from "fs";
import * as path from "path";
import { LockError } from "./errors";
import { MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, native, SyscallOp } from "./native";
import { readStat } from "./proc/stat";
import { parseStatus } from "./proc/status";
import { syscallsReturningEintrOnStop } from "./proc/tasks";
import { isDecimalName, secureStateDir } from "./state-dir";
import { DEFAULT_TARGET_WAIT_MS, isTargetLocked, pruneStaleLocks, withTargetLocks } from "./target-lock";

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
  /** The lockmem process that runs the session (its guardian recovers it if it dies). */
  owner: number;
  ops: JournalOp[];
  at: string;
}

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

export interface JournalFiles {
  json: string;
  regs: string;
}

const NAME = /^([0-9]{1,10})-([0-9]{1,20})-([0-9]{1,10})\.json$/;

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
  const body: JournalHeader = {
    v: 1,
    pid: header.pid,
    tid: header.tid,
    startTime: header.startTime,
    owner: process.pid,
    at: new Date().toISOString(),
    ops: header.ops.map((op) => ({
      nr: op.nr,
      args: op.args.map(String),
      ...(op.undo ? { undo: { nr: op.undo.nr, args: op.undo.args.map(String) } } : {}),
    })),
  };
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

// ------------------------------------------------------------------ validation

const U64 = (1n << 64n) - 1n;
const PAGE = 4096n;

function u64(v: unknown): bigint | undefined {
  return typeof v === "string" && /^[0-9]{1,20}$/.test(v) && BigInt(v) <= U64 ? BigInt(v) : undefined;
}

function isPid(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 && v <= 4194304;
}

/** A range lockmem would pass to mlock2/munlock: page-aligned, non-empty, inside the address space. */
function validRange(start: bigint | undefined, len: bigint | undefined): boolean {
  return start !== undefined && len !== undefined && len > 0n && start % PAGE === 0n && len % PAGE === 0n && start + len <= U64;
}

/** Why `op` is not a call lockmem makes (undefined when it is one). */
function invalidOp(op: unknown): string | undefined {
  const nr = native().syscalls;
  if (typeof op !== "object" || op === null) return "a call is not an object";
  const { nr: n, args, undo } = op as Partial<JournalOp>;
  if (!Array.isArray(args) || !args.every((a) => u64(a) !== undefined)) return "call arguments are not 64-bit decimals";
  const a = args.map((x) => u64(x)!);
  if (n === nr.mlock2) {
    if (a.length !== 3 || !validRange(a[0], a[1]) || (a[2] !== 0n && a[2] !== BigInt(MLOCK_ONFAULT))) return "mlock2 with arguments lockmem never uses";
    if (undo === undefined) return undefined;
    const u = undo as Partial<JournalOp>;
    const ua = Array.isArray(u.args) ? u.args.map((x) => u64(x)) : [];
    if (u.nr !== nr.munlock || ua.length !== 2 || ua[0] !== a[0] || ua[1] !== a[1]) return "an undo that is not munlock of the same range";
    return undefined;
  }
  if (undo !== undefined) return "an undo on a call lockmem never undoes";
  if (n === nr.munlock) return a.length === 2 && validRange(a[0], a[1]) ? undefined : "munlock with arguments lockmem never uses";
  if (n === nr.mlockall) {
    const flags = a[0];
    const known = BigInt(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT);
    const ok = a.length === 1 && flags !== 0n && (flags & ~known) === 0n && (flags & BigInt(MCL_CURRENT | MCL_FUTURE)) !== 0n;
    return ok ? undefined : "mlockall with flags lockmem never uses";
  }
  if (n === nr.munlockall) return a.length === 0 ? undefined : "munlockall with arguments";
  return `syscall ${String(n)}, which lockmem never makes`;
}

/** The header if lockmem wrote it for the file `name`; otherwise why not. */
export function validateJournalHeader(raw: unknown, name: string): JournalHeader | string {
  const m = NAME.exec(name);
  if (!m) return "its file name is not one lockmem writes";
  if (typeof raw !== "object" || raw === null) return "not a JSON object";
  const h = raw as Partial<JournalHeader>;
  if (h.v !== 1) return `unknown version ${JSON.stringify(h.v)}`;
  if (!isPid(h.pid) || !isPid(h.tid) || !isPid(h.owner)) return "pid, tid or owner is not a process id";
  if (!isDecimalName(h.startTime)) return "the start time is not a decimal number";
  if (String(h.pid) !== m[1] || h.startTime !== m[2] || String(h.tid) !== m[3]) return "its contents name another process than its file name";
  if (!Array.isArray(h.ops) || h.ops.length > 100_000) return "no list of calls";
  for (const op of h.ops) {
    const why = invalidOp(op);
    if (why) return why;
  }
  return h as JournalHeader;
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

/** The addon's half, checked against the header; a string says why it is not usable. */
export function parseRegsFile(text: string, header: Pick<JournalHeader, "pid" | "tid">): RegsFile | string {
  if (text.length > 64 * 1024) return "too large";
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const v = fields.get("v");
  if (v !== "1" && v !== "2") return `unknown version ${JSON.stringify(v)}`;
  if (fields.get("pid") !== String(header.pid) || fields.get("tid") !== String(header.tid)) return "it names another thread than its header";
  const flag = (k: string) => fields.get(k);
  if (!["0", "1"].includes(flag("wasStopped") ?? "") || !["0", "1"].includes(flag("restored") ?? "")) return "its flags are not 0 or 1";
  const regsHex = fields.get("regs") ?? "";
  const maskHex = fields.get("sigmask");
  const size = native().regsSize * 2;
  const dashes = (s: string, n: number) => s.length === n && /^-+$/.test(s);
  if (!(regsHex.length === size && /^[0-9a-f]+$/.test(regsHex)) && !dashes(regsHex, size)) return "its register block has the wrong size for this architecture";
  if (maskHex !== undefined && !/^[0-9a-f]{16}$/.test(maskHex) && !dashes(maskHex, 16)) return "its signal mask is not 16 hex digits";
  const foreign = fields.get("foreignStop");
  if (foreign !== undefined && foreign !== "0" && foreign !== "1") return "its foreignStop flag is not 0 or 1";
  return {
    wasStopped: flag("wasStopped") === "1",
    // Dashes until the addon saved them.
    regs: /^[0-9a-f]+$/.test(regsHex) ? Buffer.from(regsHex, "hex") : undefined,
    sigmask: maskHex && /^[0-9a-f]{16}$/.test(maskHex) ? BigInt("0x" + maskHex) : undefined,
    foreignStop: foreign === "1",
    restored: flag("restored") === "1",
  };
}

// ------------------------------------------------------------------ recovery

async function readText(file: string): Promise<string | undefined> {
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

async function currentState(pid: number, startTime: string): Promise<string | undefined> {
  try {
    const stat = await readStat(pid);
    return stat.startTime === startTime ? stat.state : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The owner died while it traced the target: the kernel detaches its tracees only late in
 * its exit, after its files (our lock, the guardian's pipe) are closed. Wait for that.
 */
async function waitUntilUntraced(pid: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    // Every thread: the dead run's seized waiters are let go only as its tracer thread
    // exits, and one still traced cannot be re-armed (its seize fails).
    const tids = await fs.readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
    const traced = await Promise.all(
      tids.map((t) =>
        fs.readFile(`/proc/${pid}/task/${t}/status`, "utf8").then(
          (text) => parseStatus(text).tracerPid !== 0,
          () => false,
        ),
      ),
    );
    if (!traced.includes(true) || Date.now() > until) return;
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * The dead run's SIGSTOP may still be pending (the guardian starts within milliseconds):
 * once its tracer is gone, the process takes it and completes the group stop by itself.
 * Recovering before that would see it arrive mid-recovery, with another session's cookie,
 * and keep the process stopped as if someone else had asked for it.
 */
async function waitUntilStopTaken(pid: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  const SIGSTOP_BIT = 1n << 18n;
  for (;;) {
    let pending = 0n;
    try {
      const text = await fs.readFile(`/proc/${pid}/status`, "utf8");
      const m = /\nShdPnd:\s*([0-9a-f]+)/.exec(text);
      pending = m ? BigInt("0x" + m[1]) : 0n;
    } catch {
      return; // gone
    }
    if ((pending & SIGSTOP_BIT) === 0n || Date.now() > until) return;
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** The process state once thread `tid` is no longer busy in the kernel (R or D), or at the deadline. */
async function waitWhileInKernel(pid: number, tid: number, ms: number): Promise<string | undefined> {
  const until = Date.now() + ms;
  for (;;) {
    let threadState: string | undefined;
    try {
      const text = await fs.readFile(`/proc/${pid}/task/${tid}/stat`, "utf8");
      threadState = text.slice(text.lastIndexOf(")") + 2).split(" ")[0];
    } catch {
      threadState = undefined;
    }
    if ((threadState !== "R" && threadState !== "D") || Date.now() > until) {
      try {
        return (await readStat(pid)).state;
      } catch {
        return undefined;
      }
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function setAside(file: string): Promise<void> {
  await fs.rename(file, `${file}.invalid`).catch(() => undefined);
}

async function recoverOne(dir: string, name: string): Promise<RecoveryResult | undefined> {
  const json = path.join(dir, name);
  const text = await readText(json);
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const m = NAME.exec(name)!;
  const header = validateJournalHeader(parsed, name);
  if (typeof header === "string") {
    await setAside(json);
    return { pid: Number(m[1]), tid: Number(m[3]), outcome: "refused", detail: `${json} is not a journal lockmem wrote (${header}): set aside as ${name}.invalid, nothing was run` };
  }
  const files = journalFiles(header.pid, header.tid, header.startTime);
  // Temporary files of a run killed while writing its journal (it holds the target lock
  // while it writes, and we hold it now: nobody is writing them).
  await fs.rm(`${files.json}.tmp`, { force: true });
  await fs.rm(`${files.regs}.tmp`, { force: true });
  const result = (outcome: RecoveryResult["outcome"], detail: string): RecoveryResult => ({ pid: header.pid, tid: header.tid, outcome, detail });
  const state = await currentState(header.pid, header.startTime);
  if (state === undefined || state === "Z" || state === "X") {
    await removeJournal(files);
    return result("dropped", "the process is gone");
  }
  const regsText = await readText(files.regs);
  if (regsText === undefined) {
    // The addon never started (its file appears complete or not at all): nothing changed.
    await removeJournal(files);
    return result("dropped", "the interrupted run had not touched the process");
  }
  const regs = parseRegsFile(regsText, header);
  if (typeof regs === "string") {
    await setAside(files.regs);
    await setAside(json);
    return result("refused", `${files.regs} is not a journal lockmem wrote (${regs}): set aside, nothing was run`);
  }
  await waitUntilUntraced(header.pid, 2000);
  await waitUntilStopTaken(header.pid, 2000);
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
  // The guardian can get here while the held thread is still inside our injected call (an
  // mlock of gigabytes takes seconds), running (R) or faulting pages in (D): the group stop
  // takes it when the call returns. Wait for that before judging the process "running".
  const settled = await waitWhileInKernel(header.pid, header.tid, 60_000);
  if (settled !== "T") {
    // Never write old registers into a running thread: it has moved on (or was continued
    // by someone else while it held our registers, which no journal can undo).
    await removeJournal(files);
    return result("dropped", `the process is running (state ${settled}); its registers were left alone`);
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

/** The journals left in the state dir (optionally of one pid), by file name. */
async function journalNames(pid?: number): Promise<{ dir: string; names: string[] }> {
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
    const m = NAME.exec(name);
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
    const m = NAME.exec(name);
    if (!m) continue;
    let header: Partial<JournalHeader> = {};
    try {
      header = JSON.parse((await readText(path.join(dir, name))) ?? "{}") as Partial<JournalHeader>;
    } catch {
      // shown without owner
    }
    out.push({ tid: Number(m[3]), ...(isPid(header.owner) ? { owner: header.owner } : {}), ...(typeof header.at === "string" ? { since: header.at } : {}) });
  }
  return out;
}
