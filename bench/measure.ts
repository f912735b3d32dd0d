// Measuring what a target feels, for the benches: a heartbeat target's longest stall
// around an action, gdb as the baseline users reach for, and the table and goal lines.
import { execFile } from "child_process";
import { InjectionResult, runInTarget } from "../src/inject";
import { native, SyscallOp } from "../src/native";
import { readMappings } from "../src/proc/smaps";
import { InjectionChoice, pickInjectionThread, readThreads } from "../src/proc/tasks";
import { InProcessLockReply, Target, TargetStats } from "../tests/support/target";

const MIB = 1024 * 1024;
const GDB = "/usr/bin/gdb";

// ---------------------------------------------------------------- statistics and table

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function max(xs: number[]): number {
  return xs.length === 0 ? NaN : Math.max(...xs);
}

export function us(v: number): string {
  if (!Number.isFinite(v)) return "-";
  return v >= 10_000 ? `${(v / 1000).toFixed(1)} ms` : `${Math.round(v)} us`;
}

export interface Row {
  scenario: string;
  method: string;
  /** Each column: its samples in microseconds (empty = not applicable). */
  stall: number[];
  pause: number[];
  kernel: number[];
  wall: number[];
}

/** A row with no samples yet. */
export function row(scenario: string, method: string): Row {
  return { scenario, method, stall: [], pause: [], kernel: [], wall: [] };
}

export function ratio(a: number, b: number): number {
  return b > 0 ? a / b : NaN;
}

export function printTable(rows: Row[]): void {
  const header = ["scenario", "method", "n", "stall med", "stall max", "pause med", "pause max", "kernel med", "kernel max", "wall med"];
  const lines = rows.map((r) => [
    r.scenario,
    r.method,
    String(Math.max(r.stall.length, r.pause.length, r.kernel.length, r.wall.length)),
    us(median(r.stall)),
    us(max(r.stall)),
    us(median(r.pause)),
    us(max(r.pause)),
    us(median(r.kernel)),
    us(max(r.kernel)),
    us(median(r.wall)),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(fmt(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const l of lines) console.log(fmt(l));
}

export function goalLine(text: string, met: boolean): void {
  console.log(`${met ? "PASS" : "MISS"}  ${text}`);
}

// ---------------------------------------------------------------- measuring a stall

export function hrUs(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1000;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Stats once the heartbeat has ticked again after `action` ended: a gap is recorded only
 * at the tick that closes it, so a read straight after the action could miss it.
 */
export async function statsAfter(t: Target): Promise<TargetStats> {
  const first = await t.stats();
  return t.waitForStats((s) => s.heartbeat.iterations > first.heartbeat.iterations + 1, "two heartbeats after the action", 10_000);
}

/** The heartbeat's longest stall (us, beyond its sleep period) while `action` ran, and the action's wall time. */
export async function measureStall<T>(t: Target, action: () => Promise<T>): Promise<{ result: T; stallUs: number; wallUs: number }> {
  await t.resetStall();
  const start = process.hrtime.bigint();
  const result = await action();
  const wallUs = hrUs(start);
  const s = await statsAfter(t);
  return { result, stallUs: s.heartbeat.max_stall_us, wallUs };
}

export async function inProcess(t: Target, command: string): Promise<InProcessLockReply> {
  const reply = (await t.control(command, 60_000)) as InProcessLockReply;
  if (!reply.ok) throw new Error(`in-process "${command}" failed: ${reply.error ?? JSON.stringify(reply)}`);
  return reply;
}

export function runGdb(pid: number, expression: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      GDB,
      ["-p", String(pid), "-batch", "-ex", `call ${expression}`],
      // No network here: keep gdb from trying debuginfod servers.
      { timeout: 120_000, killSignal: "SIGKILL", env: { ...process.env, DEBUGINFOD_URLS: "" }, maxBuffer: 16 * MIB },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`gdb -p ${pid} -batch -ex 'call ${expression}' failed: ${err.message}\n${stderr}`));
          return;
        }
        // gdb prints the value as "$1 = 0"; anything else means the call did not run.
        const m = /^\$1 = (-?\d+)$/m.exec(stdout);
        if (!m || m[1] !== "0") {
          reject(new Error(`gdb -p ${pid}: 'call ${expression}' did not return 0:\n${stdout}${stderr}`));
          return;
        }
        resolve(stdout);
      },
    );
  });
}

/**
 * Waits until lockmem's thread choice is the heartbeat (main) thread. Right after a
 * control command the control thread may still be running, and lockmem rightly prefers
 * a running thread; injecting there would not stop the heartbeat, so it is no sample.
 */
export async function waitForHeartbeatChoice(pid: number): Promise<InjectionChoice> {
  let last: InjectionChoice | undefined;
  for (let i = 0; i < 200; i++) {
    last = pickInjectionThread(await readThreads(pid), pid);
    if (last?.tid === pid) return last;
    await sleep(1);
  }
  throw new Error(`lockmem would not choose the heartbeat thread of ${pid}: ${last?.reason ?? "no threads"}`);
}

const PAGE = 4096n;

export interface NoWorkBatch {
  /** The page's address. */
  page: bigint;
  /** Runs the batch through lockmem's production path (runInTarget), checking both calls succeeded. */
  run(): Promise<InjectionResult>;
}

/**
 * mlock2 of one page of the target's anon mapping that is already resident, then munlock of
 * it: both calls only flip VMA flags, so nearly all of the session's pause is its overhead.
 */
export async function noWorkBatch(t: Target): Promise<NoWorkBatch> {
  const anon = (await t.stats()).mappings.find((m) => m.kind === "anon");
  if (!anon) throw new Error("the target reports no anon mapping");
  const page = BigInt(anon.start);
  const nr = native().syscalls;
  const ops: SyscallOp[] = [
    { nr: nr.mlock2, args: [page, PAGE, 0n] },
    { nr: nr.munlock, args: [page, PAGE] },
  ];
  const mappings = await readMappings(t.pid);
  return {
    page,
    async run() {
      const run = await runInTarget(t.pid, mappings, ops, { startTime: t.startTime, checkSeccomp: false });
      const reply = run.reply;
      if (reply.results.length !== ops.length || reply.results.some((r) => r.errno !== 0)) {
        throw new Error(`no-work batch failed in ${t.pid}: ${JSON.stringify(reply, (_k, v) => (typeof v === "bigint" ? v.toString() : v))}`);
      }
      return run;
    },
  };
}

export function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r${text}   `);
}
