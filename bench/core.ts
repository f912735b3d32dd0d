// `npm run bench`: how long a target stops while lockmem locks its memory, against the
// same call made by the target itself (the floor) and against gdb.
//
// A heartbeat target (tests/fixtures/target.c) measures the longest gap between two of
// its own loop iterations; every number below is that gap (minus the loop's sleep
// period) or a time reported by lockmem's addon. Methods are interleaved repetition by
// repetition, so load from other processes on this machine hits all of them alike, and
// every goal is a ratio of numbers measured in this run. An idle window of the same
// shape gives the noise floor of the heartbeat on this machine.
//
// Environment knobs: BENCH_REPS (default 24), BENCH_GDB_REPS (default 12), BENCH_SMALL_REPS
// (default 80), BENCH_HEARTBEAT_US (sleep between heartbeats, default 100; 0 = busy loop);
// for the stall-versus-size table (stall-size.ts) BENCH_SIZE_REPS (12), BENCH_SIZE_GDB_REPS
// (3), BENCH_SIZE_MAPS (10000); BENCH_ONLY=size runs that table alone, BENCH_ONLY=core all
// but it (under emulation, bench/guest.ts, the 1,000-thread targets take long to start).
import * as api from "../src/api";
import { readMappings } from "../src/proc/smaps";
import { pickInjectionThread, readThreads } from "../src/proc/tasks";
import { startTarget, stopAllTargets, Target, TargetStats } from "../tests/support/target";
import { envInt } from "./env";
import { benchStallVersusSize } from "./stall-size";
import { goalLine, hrUs, inProcess, max, measureStall, median, noWorkBatch, printTable, progress, ratio, row, Row, runGdb, sleep, us, waitForHeartbeatChoice } from "./measure";

const ANON_MB = 256;

const GOAL_OVERHEAD_US = 100;
const GOAL_LOCK_RATIO = 1.2;
const GOAL_GDB_RATIO = 5;


const REPS = envInt("BENCH_REPS", 24, 0);
const GDB_REPS = envInt("BENCH_GDB_REPS", 12, 0);
const SMALL_REPS = envInt("BENCH_SMALL_REPS", 80, 0);
const HEARTBEAT_US = envInt("BENCH_HEARTBEAT_US", 100, 0);

function expectLocked(s: TargetStats, what: string): void {
  if (s.vm_lck_kb < ANON_MB * 1024) throw new Error(`${what}: only ${s.vm_lck_kb} KiB locked afterwards, expected at least ${ANON_MB} MiB`);
}

function expectUnlocked(s: TargetStats, what: string): void {
  if (s.vm_lck_kb !== 0) throw new Error(`${what}: ${s.vm_lck_kb} KiB still locked`);
}

async function lockmemUnlockAll(pid: number): Promise<void> {
  await api.unlock({ target: { pid }, mappings: { all: true } });
}

// ---------------------------------------------------------------- scenario 1: 256 MiB

interface LockScenario {
  rows: Row[];
  inProcessStall: number[];
  lockmemStall: number[];
  gdbStall: number[];
}

/** The floor: the target's own heartbeat thread calls mlockall between two iterations. */
async function floorRound(t: Target, floor: Row): Promise<void> {
  const own = await measureStall(t, () => inProcess(t, "mlockall current"));
  if (own.result.thread !== "main") throw new Error(`in-process mlockall ran on the ${own.result.thread} thread, not the heartbeat thread`);
  expectLocked(await t.stats(), "in-process mlockall");
  floor.stall.push(own.stallUs);
  floor.kernel.push(own.result.ns / 1000);
  floor.wall.push(own.wallUs);
  await inProcess(t, "munlockall");
  expectUnlocked(await t.stats(), "in-process munlockall");
}

/** `lockmem lock --all` and unlock again; its wall time (us). */
async function lockmemRound(t: Target, lockmem: Row): Promise<number> {
  const pid = t.pid;
  // lockmem may pick the control thread when it is still running after answering
  // us; that round says nothing about the heartbeat's stall, so it is run again.
  for (let attempt = 0; ; attempt++) {
    await waitForHeartbeatChoice(pid);
    const remote = await measureStall(t, () => api.lock({ target: { pid }, mappings: { all: true } }));
    const action = remote.result.processes[0].action;
    if (!action || action.pauseUs === undefined) throw new Error("lockmem lock reported no pause");
    if (action.thread?.tid !== pid) {
      await lockmemUnlockAll(pid);
      if (attempt < 5) continue;
      throw new Error(`lockmem keeps injecting into another thread than the heartbeat: ${JSON.stringify(action.thread)}`);
    }
    expectLocked(await t.stats(), "lockmem lock");
    lockmem.stall.push(remote.stallUs);
    lockmem.pause.push(action.pauseUs);
    lockmem.wall.push(remote.wallUs);
    await lockmemUnlockAll(pid);
    expectUnlocked(await t.stats(), "lockmem unlock");
    return remote.wallUs;
  }
}

async function gdbRound(t: Target, gdb: Row): Promise<void> {
  const viaGdb = await measureStall(t, () => runGdb(t.pid, "(int)mlockall(3)"));
  expectLocked(await t.stats(), "gdb mlockall");
  gdb.stall.push(viaGdb.stallUs);
  gdb.wall.push(viaGdb.wallUs);
  await lockmemUnlockAll(t.pid);
  expectUnlocked(await t.stats(), "unlock after gdb");
}

async function benchLargeLock(t: Target): Promise<LockScenario> {
  const scenario = `lock ${ANON_MB} MiB`;
  const floor = row(scenario, "in-process mlockall(MCL_CURRENT)");
  const lockmem = row(scenario, "lockmem lock --all");
  const gdb = row(scenario, "gdb call mlockall(3)");
  const idle = row(scenario, "idle window (noise)");

  // One unrecorded round first: the first mlockall also faults in file pages and thread
  // stacks, which later rounds find resident.
  await inProcess(t, "mlockall current");
  await inProcess(t, "munlockall");
  await api.lock({ target: { pid: t.pid }, mappings: { all: true } });
  await lockmemUnlockAll(t.pid);

  for (let i = 0; i < REPS; i++) {
    progress(`${scenario}: round ${i + 1}/${REPS}`);
    // The order of the methods rotates from round to round, so that neither a method's
    // position (what ran just before it) nor a slow drift of the machine's load favours one.
    let lockmemWallUs = 0;
    const methods: Array<() => Promise<void>> = [
      () => floorRound(t, floor),
      async () => {
        lockmemWallUs = await lockmemRound(t, lockmem);
      },
      async () => {
        if (i < GDB_REPS) await gdbRound(t, gdb);
      },
    ];
    for (let k = 0; k < methods.length; k++) await methods[(i + k) % methods.length]();

    // Noise: nothing done to the target for as long as a lockmem lock takes.
    const quiet = await measureStall(t, () => sleep(Math.max(1, Math.round(lockmemWallUs / 1000))));
    idle.stall.push(quiet.stallUs);
  }
  if (process.stderr.isTTY) process.stderr.write("\n");
  return { rows: [floor, lockmem, gdb, idle], inProcessStall: floor.stall, lockmemStall: lockmem.stall, gdbStall: gdb.stall };
}

// ---------------------------------------------------------------- scenario 2: calls that do nothing

interface SmallScenario {
  rows: Row[];
  /** Heartbeat stall minus the in-kernel time of the calls, per round (us). */
  overheadStall: number[];
  /** Addon pause minus the in-kernel time of the calls, per round (us). */
  overheadPause: number[];
}

async function benchSmallBatch(t: Target): Promise<SmallScenario> {
  const scenario = "1 page mlock2+munlock";
  const pid = t.pid;
  const batch = await noWorkBatch(t);
  const { page } = batch;

  const inject = row(scenario, "lockmem session (group stop+journal)");
  const overheadRow = row(scenario, "  overhead = stall|pause - kernel");
  const floor = row(scenario, "in-process (control thread)");
  const idle = row(scenario, "idle window (noise)");
  const gdb = row(scenario, "gdb call munlock(page)");
  const hex = `0x${page.toString(16)}`;

  for (let i = 0; i < SMALL_REPS; i++) {
    progress(`${scenario}: round ${i + 1}/${SMALL_REPS}`);
    // The production path (api.lock's runInTarget): crash journal, whole-process group
    // stop, thread chosen from /proc, one batch; once the heartbeat thread is the choice.
    await waitForHeartbeatChoice(pid);
    const run = await measureStall(t, () => batch.run());
    const reply = run.result.reply;
    const kernelUs = reply.results.reduce((a, r) => a + r.ns, 0) / 1000;
    inject.stall.push(run.stallUs);
    inject.pause.push(reply.pauseNs / 1000);
    inject.kernel.push(kernelUs);
    inject.wall.push(run.wallUs);
    overheadRow.stall.push(Math.max(0, run.stallUs - kernelUs));
    overheadRow.pause.push(reply.pauseNs / 1000 - kernelUs);

    const t0 = process.hrtime.bigint();
    const locked = await inProcess(t, `mlock2 ${hex} 4096 0`);
    const unlocked = await inProcess(t, `munlock ${hex} 4096`);
    floor.kernel.push((locked.ns + unlocked.ns) / 1000);
    floor.wall.push(hrUs(t0));

    const quiet = await measureStall(t, () => sleep(1));
    idle.stall.push(quiet.stallUs);

    if (i < GDB_REPS) {
      const viaGdb = await measureStall(t, () => runGdb(pid, `(int)munlock(${hex}, 4096)`));
      gdb.stall.push(viaGdb.stallUs);
      gdb.wall.push(viaGdb.wallUs);
    }
  }
  if (process.stderr.isTTY) process.stderr.write("\n");
  return { rows: [inject, overheadRow, floor, gdb, idle], overheadStall: overheadRow.stall, overheadPause: overheadRow.pause };
}

// ---------------------------------------------------------------- phases of api.lock

/** Wall time of the /proc reads lockmem does around the pause, to set against the pause itself. */
async function phaseTimes(pid: number): Promise<Row[]> {
  const scenario = "lockmem phases";
  const smaps = row(scenario, "readMappings (smaps)");
  const tasks = row(scenario, "readThreads + pick");
  for (let i = 0; i < 10; i++) {
    let t0 = process.hrtime.bigint();
    await readMappings(pid);
    smaps.wall.push(hrUs(t0));
    t0 = process.hrtime.bigint();
    pickInjectionThread(await readThreads(pid), pid);
    tasks.wall.push(hrUs(t0));
  }
  return [smaps, tasks];
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  if (process.env.BENCH_ONLY === "size") return benchStallVersusSize();
  console.log(
    `lockmem benchmark: ${REPS} rounds (gdb ${GDB_REPS}) of a ${ANON_MB} MiB lock, ${SMALL_REPS} rounds of a 1-page batch; ` +
      `heartbeat sleeps ${HEARTBEAT_US} us between iterations; stall = longest heartbeat gap minus that sleep`,
  );
  const t = await startTarget({ mode: "heartbeat", heartbeatUs: HEARTBEAT_US, anonMb: ANON_MB, inprocessMlock: true, readyTimeoutMs: 120_000 });
  const large = await benchLargeLock(t);
  const small = await benchSmallBatch(t);
  const phases = await phaseTimes(t.pid);

  console.log("");
  console.log("stall: longest heartbeat stall seen by the target; pause: lockmem's own held time (addon pauseNs);");
  console.log("kernel: in-kernel call time (addon per-call ns between entry and exit stops; in-process: the target's clock); wall: seen by the caller");
  console.log("");
  printTable([...large.rows, ...small.rows, ...phases]);
  console.log("");

  const overheadMed = median(small.overheadStall);
  const overheadPauseMed = median(small.overheadPause);
  goalLine(
    `injection overhead median ${Math.round(overheadMed)} us, max ${Math.round(max(small.overheadStall))} us (heartbeat stall - kernel time; ` +
      `addon pause - kernel time: median ${Math.round(overheadPauseMed)} us, max ${Math.round(max(small.overheadPause))} us) (goal <= ${GOAL_OVERHEAD_US} us)`,
    overheadMed <= GOAL_OVERHEAD_US,
  );
  const lockRatio = ratio(median(large.lockmemStall), median(large.inProcessStall));
  goalLine(
    `${ANON_MB} MiB lock stall: lockmem / in-process = ${lockRatio.toFixed(2)} (medians ${us(median(large.lockmemStall))} / ${us(median(large.inProcessStall))}; ` +
      `max ${us(max(large.lockmemStall))} / ${us(max(large.inProcessStall))}) (goal <= ${GOAL_LOCK_RATIO})`,
    lockRatio <= GOAL_LOCK_RATIO,
  );
  const gdbRatio = ratio(median(large.gdbStall), median(large.lockmemStall));
  goalLine(
    `gdb / lockmem stall = ${gdbRatio.toFixed(1)} (medians ${us(median(large.gdbStall))} / ${us(median(large.lockmemStall))}) (goal >= ${GOAL_GDB_RATIO})`,
    gdbRatio >= GOAL_GDB_RATIO,
  );
  await t.stop();
  if (process.env.BENCH_ONLY !== "core") await benchStallVersusSize();
}

main()
  .catch((err: unknown) => {
    console.error(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    process.exitCode = 1;
  })
  .finally(() =>
    stopAllTargets().catch((err: unknown) => {
      console.error(`stopping targets failed: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    }),
  );
