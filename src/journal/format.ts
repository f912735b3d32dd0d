// What a journal's two files hold, and the checks that decide whether lockmem wrote them.
// The `.json` header is this side's (written by files.ts); the `.regs` file is the addon's
// (native/journal.h describes its "key=value" lines; native/journal.cc writes them).
//
// A journal decides which syscalls run in a target and which registers it gets back, so
// nothing in it is trusted beyond the state dir check (src/state-dir.ts): names must be
// what lockmem writes, every field must have the type and range lockmem writes, and the
// calls must be exactly the mlock family with the arguments a plan would use. Anything
// else is set aside (`.invalid`) and reported, never run.
import { MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, native, SyscallOp } from "../native";
import { isDecimalName } from "../state-dir";

/** The version of the `.json` header this side writes and reads. */
export const HEADER_VERSION = 1;

/** The version of the `.regs` file native/journal.cc writes. */
export const REGS_VERSION = "2";
/**
 * The versions of the addon's `.regs` file that can be recovered: REGS_VERSION, and v=1
 * (an older run's), which has neither the sigmask nor the foreignStop line.
 */
const REGS_VERSIONS: readonly string[] = ["1", REGS_VERSION];
/**
 * The `.regs` file's `key=value` lines in the order native/journal.cc writes them: the one
 * description of the format on this side (tests/unit/journal-format.test.ts checks that
 * the C++ writer writes exactly these, and this version).
 */
export const REGS_FIELDS = ["v", "pid", "tid", "wasStopped", "regs", "sigmask", "foreignStop", "restored"] as const;
/**
 * The optional line appended after them (native/journal.cc saveBlockedCalls, before the
 * SIGSTOP, only when there is one): `calls=<tid>:<nr>:<arg0>:...:<arg5>:<sp>:<pc>,...`, the
 * calls threads were seen blocked in, which an arm64 stop hides (native/arch/aarch64.cc).
 */
export const REGS_OPTIONAL_FIELDS = ["calls"] as const;
/** One entry of the calls= line: tid and syscall number in decimal, then 8 hex words. */
const BLOCKED_CALL = /^[0-9]{1,10}:[0-9]{1,4}(?::[0-9a-f]{1,16}){8}$/;
/** A journal is a few lines and one entry per blocked thread (at most ~150 bytes each). */
const REGS_FILE_MAX = 16 * 1024 * 1024;

/** A journal's header file name: `<pid>-<startTime>-<tid>.json`. */
export const JOURNAL_NAME = /^([0-9]{1,10})-([0-9]{1,20})-([0-9]{1,10})\.json$/;

export interface JournalOp {
  nr: number;
  args: string[];
  undo?: { nr: number; args: string[] };
}

export interface JournalHeader {
  v: typeof HEADER_VERSION;
  pid: number;
  tid: number;
  startTime: string;
  /** The lockmem process that runs the session (its guardian recovers it if it dies). */
  owner: number;
  ops: JournalOp[];
  at: string;
}

export interface RegsFile {
  wasStopped: boolean;
  regs?: Buffer;
  /** The thread's own signal mask, when the run blocked its signals (v=2 journals). */
  sigmask?: bigint;
  /** Someone else's stop signal arrived during the run: the process must stay stopped. */
  foreignStop: boolean;
  restored: boolean;
  /** The calls= line's value, checked entry by entry (the addon checks it again). */
  blockedCalls?: string;
}

/** The header of a session this process runs now, as it goes into the `.json` file. */
export function newJournalHeader(header: { pid: number; tid: number; startTime: string; ops: SyscallOp[] }): JournalHeader {
  return {
    v: HEADER_VERSION,
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
}

/** The calls of a header, as the addon takes them. */
export function journalOpsToSyscalls(ops: JournalOp[]): SyscallOp[] {
  return ops.map((op) => ({
    nr: op.nr,
    args: op.args.map((a) => BigInt(a)),
    ...(op.undo ? { undo: { nr: op.undo.nr, args: op.undo.args.map((a) => BigInt(a)) } } : {}),
  }));
}

// ------------------------------------------------------------------ validation

const U64 = (1n << 64n) - 1n;
const PAGE = 4096n;

function u64(v: unknown): bigint | undefined {
  return typeof v === "string" && /^[0-9]{1,20}$/.test(v) && BigInt(v) <= U64 ? BigInt(v) : undefined;
}

export function isPid(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 && v <= 4194304;
}

/** A range lockmem would pass to mlock2/munlock: page-aligned, non-empty, inside the address space. */
function validRange(start: bigint | undefined, len: bigint | undefined): boolean {
  return start !== undefined && len !== undefined && len > 0n && start % PAGE === 0n && len % PAGE === 0n && start + len <= U64;
}

/** Why an mlock2 call (arguments `a`, optional `undo`) is not one lockmem makes (undefined when it is one). */
function invalidMlock2(a: bigint[], undo: unknown): string | undefined {
  const nr = native().syscalls;
  if (a.length !== 3 || !validRange(a[0], a[1]) || (a[2] !== 0n && a[2] !== BigInt(MLOCK_ONFAULT))) return "mlock2 with arguments lockmem never uses";
  if (undo === undefined) return undefined;
  const u = undo as Partial<JournalOp>;
  const ua = Array.isArray(u.args) ? u.args.map((x) => u64(x)) : [];
  if (u.nr !== nr.munlock || ua.length !== 2 || ua[0] !== a[0] || ua[1] !== a[1]) return "an undo that is not munlock of the same range";
  return undefined;
}

/** Why `op` is not a call lockmem makes (undefined when it is one). */
function invalidOp(op: unknown): string | undefined {
  const nr = native().syscalls;
  if (typeof op !== "object" || op === null) return "a call is not an object";
  const { nr: n, args, undo } = op as Partial<JournalOp>;
  if (!Array.isArray(args) || !args.every((a) => u64(a) !== undefined)) return "call arguments are not 64-bit decimals";
  const a = args.map((x) => u64(x)!);
  if (n === nr.mlock2) return invalidMlock2(a, undo);
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
  const m = JOURNAL_NAME.exec(name);
  if (!m) return "its file name is not one lockmem writes";
  if (typeof raw !== "object" || raw === null) return "not a JSON object";
  const h = raw as Partial<JournalHeader>;
  if (h.v !== HEADER_VERSION) return `unknown version ${JSON.stringify(h.v)}`;
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

/** The addon's half, checked against the header; a string says why it is not usable. */
export function parseRegsFile(text: string, header: Pick<JournalHeader, "pid" | "tid">): RegsFile | string {
  if (text.length > REGS_FILE_MAX) return "too large";
  const known: readonly string[] = [...REGS_FIELDS, ...REGS_OPTIONAL_FIELDS];
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0 && known.includes(line.slice(0, eq))) fields.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const v = fields.get("v");
  if (!REGS_VERSIONS.includes(v ?? "")) return `unknown version ${JSON.stringify(v)}`;
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
  const calls = fields.get("calls");
  if (calls !== undefined && !validBlockedCalls(calls)) return "its calls line is not one lockmem writes";
  return {
    wasStopped: flag("wasStopped") === "1",
    // Dashes until the addon saved them.
    regs: /^[0-9a-f]+$/.test(regsHex) ? Buffer.from(regsHex, "hex") : undefined,
    sigmask: maskHex && /^[0-9a-f]{16}$/.test(maskHex) ? BigInt("0x" + maskHex) : undefined,
    foreignStop: foreign === "1",
    restored: flag("restored") === "1",
    ...(calls !== undefined ? { blockedCalls: calls } : {}),
  };
}

function validBlockedCalls(value: string): boolean {
  return value.split(",").every((entry) => BLOCKED_CALL.test(entry) && isPid(Number(entry.slice(0, entry.indexOf(":")))));
}
