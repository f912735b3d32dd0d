// Stall versus target size (issue 13 item 7), part of `npm run bench`. A heartbeat thread
// measures the longest gap it sees while:
//   - lockmem runs a no-work lock (one page mlock2 + munlock: the session costs, the calls do
//     not) on a target with 1, 100 and 1,000 threads blocked in epoll_wait, and 1,000 in futex
//     waits, against `gdb -p P -batch -ex 'call (int)mlockall(3)'` on the same target;
//   - lockmem locks 10,000 separate one-page r-x mappings (one session, one mlock2 each, and
//     again with --max-pause-ms 5), against the target making the same mlock2 calls itself.
// Methods alternate repetition by repetition on the same target, and every figure printed
// is a ratio of numbers measured in this run. The epoll numbers depend on how the other
// threads are re-armed after the group stop (native/waiters.cc).
import * as api from "../src/api";
import { startTarget, WorkerMode } from "../tests/support/target";
import { envInt } from "./env";
import { goalLine, inProcess, max, measureStall, median, noWorkBatch, printTable, progress, ratio, row, Row, runGdb, us } from "./measure";

const REPS = envInt("BENCH_SIZE_REPS", 12, 1);
const GDB_REPS = envInt("BENCH_SIZE_GDB_REPS", 3, 0);
const MAPS = envInt("BENCH_SIZE_MAPS", 10_000, 1);
const HEARTBEAT_US = envInt("BENCH_HEARTBEAT_US", 100, 0);

/** The goals, each a ratio of figures measured in the same run (or a hold time). */
const GOAL = { epollVsFutex: 2, gdbVsLockmem: 10, mapsVsInProcess: 10, boundedHoldMs: 10 };

interface ThreadCase {
  threads: number;
  mode: WorkerMode;
  label: string;
}

const THREAD_CASES: ThreadCase[] = [
  { threads: 1, mode: "epoll-block", label: "1 thread in epoll_wait" },
  { threads: 100, mode: "epoll-block", label: "100 threads in epoll_wait" },
  { threads: 1000, mode: "epoll-block", label: "1,000 threads in epoll_wait" },
  { threads: 1000, mode: "futex", label: "1,000 threads in futex wait" },
];

async function benchThreads(c: ThreadCase): Promise<{ lockmem: Row; gdb: Row }> {
  const scenario = `no-work lock, ${c.label}`;
  const lockmem = row(scenario, "lockmem session");
  const gdb = row(scenario, "gdb call mlockall(3)");
  const t = await startTarget({ mode: "heartbeat", heartbeatUs: HEARTBEAT_US, anonMb: 1, threads: c.threads, threadMode: c.mode, readyTimeoutMs: 120_000 });
  // EINTR the blocked threads saw, per method (issue 13 item 3: there should be none from lockmem).
  const eintr = async (): Promise<number> => (await t.stats()).threads.reduce((a, w) => a + w.eintr, 0);
  let lockmemEintr = 0;
  let gdbEintr = 0;
  try {
    const batch = await noWorkBatch(t);
    const run = async (): Promise<{ pauseUs: number }> => ({ pauseUs: (await batch.run()).reply.pauseNs / 1000 });
    for (let i = 0; i < REPS; i++) {
      progress(`${scenario}: round ${i + 1}/${REPS}`);
      let before = await eintr();
      const session = await measureStall(t, run);
      lockmemEintr += (await eintr()) - before;
      lockmem.stall.push(session.stallUs);
      lockmem.pause.push(session.result.pauseUs);
      lockmem.wall.push(session.wallUs);
      if (i < GDB_REPS) {
        before = await eintr();
        const viaGdb = await measureStall(t, () => runGdb(t.pid, "(int)mlockall(3)"));
        gdbEintr += (await eintr()) - before;
        gdb.stall.push(viaGdb.stallUs);
        gdb.wall.push(viaGdb.wallUs);
        await api.unlock({ target: { pid: t.pid }, mappings: { all: true } });
      }
    }
    console.log(`(${scenario}: EINTR seen by the blocked threads: ${lockmemEintr} in ${REPS} lockmem sessions, ${gdbEintr} in ${Math.min(REPS, GDB_REPS)} gdb calls)`);
  } finally {
    await t.stop();
  }
  return { lockmem, gdb };
}

interface MapsScenario {
  rows: Row[];
  lockmem: Row;
  inProcess: Row;
  bounded: Row;
}

async function benchSmallMaps(): Promise<MapsScenario> {
  const scenario = `lock ${MAPS.toLocaleString("en")} one-page r-x mappings`;
  const lockmem = row(scenario, "lockmem, one session");
  const bounded = row(scenario, "lockmem --max-pause-ms 5");
  const own = row(scenario, "in-process mlock2 loop");
  const sessions: number[] = [];
  const t = await startTarget({ mode: "heartbeat", heartbeatUs: HEARTBEAT_US, smallMaps: MAPS, inprocessMlock: true, readyTimeoutMs: 120_000 });
  const sel = { kinds: ["anon" as const], permissions: ["r-x"] };
  try {
    for (let i = 0; i < REPS; i++) {
      progress(`${scenario}: round ${i + 1}/${REPS}`);
      const methods: Array<() => Promise<void>> = [
        async () => {
          const r = await measureStall(t, () => api.lock({ target: { pid: t.pid }, mappings: sel }));
          const a = r.result.processes[0].action;
          lockmem.stall.push(r.stallUs);
          lockmem.pause.push(a?.pauseUs ?? NaN);
          lockmem.wall.push(r.wallUs);
          await api.unlock({ target: { pid: t.pid }, mappings: sel });
        },
        async () => {
          const r = await measureStall(t, () => api.lock({ target: { pid: t.pid }, mappings: sel, maxPauseMs: 5 }));
          const a = r.result.processes[0].action;
          bounded.stall.push(r.stallUs);
          bounded.pause.push(a?.pauseUs ?? NaN);
          bounded.wall.push(r.wallUs);
          sessions.push(a?.sessions ?? NaN);
          await api.unlock({ target: { pid: t.pid }, mappings: sel });
        },
        async () => {
          const r = await measureStall(t, () => inProcess(t, "mlock2-small on=main"));
          own.stall.push(r.stallUs);
          own.kernel.push(r.result.ns / 1000);
          own.wall.push(r.wallUs);
          await inProcess(t, "munlock-small on=main");
        },
      ];
      for (let k = 0; k < methods.length; k++) await methods[(i + k) % methods.length]();
      if ((await t.stats()).vm_lck_kb !== 0) throw new Error(`${scenario}: memory left locked after round ${i + 1}`);
    }
  } finally {
    await t.stop();
  }
  console.log(`(${scenario}, --max-pause-ms 5: ${median(sessions)} sessions median, ${max(sessions)} at most)`);
  return { rows: [lockmem, bounded, own], lockmem, inProcess: own, bounded };
}

/** Runs the stall-versus-size scenarios and prints their table and ratios. */
export async function benchStallVersusSize(): Promise<void> {
  console.log("");
  console.log(`stall versus target size: ${REPS} rounds each (gdb ${GDB_REPS}); stall = longest heartbeat gap minus its ${HEARTBEAT_US} us sleep`);
  const threadRows: Array<{ c: ThreadCase; lockmem: Row; gdb: Row }> = [];
  for (const c of THREAD_CASES) threadRows.push({ c, ...(await benchThreads(c)) });
  const maps = await benchSmallMaps();
  if (process.stderr.isTTY) process.stderr.write("\n");
  console.log("");
  printTable([...threadRows.flatMap((r) => [r.lockmem, r.gdb]), ...maps.rows]);
  console.log("");
  console.log("ratios (medians of the stall):");
  for (const r of threadRows) {
    console.log(`  ${r.c.label.padEnd(28)} lockmem ${us(median(r.lockmem.stall)).padStart(8)}   gdb ${us(median(r.gdb.stall)).padStart(9)}   gdb / lockmem ${ratio(median(r.gdb.stall), median(r.lockmem.stall)).toFixed(1)}x`);
  }
  const epoll1000 = threadRows.find((r) => r.c.threads === 1000 && r.c.mode === "epoll-block")!;
  const futex1000 = threadRows.find((r) => r.c.threads === 1000 && r.c.mode === "futex")!;
  const epollVsFutex = ratio(median(epoll1000.lockmem.stall), median(futex1000.lockmem.stall));
  goalLine(`1,000 epoll threads / 1,000 futex threads = ${epollVsFutex.toFixed(2)}x (goal <= ${GOAL.epollVsFutex}x)`, epollVsFutex <= GOAL.epollVsFutex);
  const gdbVsLockmem = ratio(median(epoll1000.gdb.stall), median(epoll1000.lockmem.stall));
  goalLine(`1,000 epoll threads: gdb / lockmem = ${gdbVsLockmem.toFixed(1)}x (goal >= ${GOAL.gdbVsLockmem}x)`, gdbVsLockmem >= GOAL.gdbVsLockmem);
  const mapsRatio = ratio(median(maps.lockmem.stall), median(maps.inProcess.stall));
  goalLine(
    `${MAPS.toLocaleString("en")} mappings: lockmem one session / in-process loop = ${mapsRatio.toFixed(1)}x (medians ${us(median(maps.lockmem.stall))} / ${us(median(maps.inProcess.stall))}) (goal <= ${GOAL.mapsVsInProcess}x)`,
    mapsRatio <= GOAL.mapsVsInProcess,
  );
  const boundedHold = median(maps.bounded.pause) / 1000;
  goalLine(
    `${MAPS.toLocaleString("en")} mappings with --max-pause-ms 5: longest hold per run ${boundedHold.toFixed(1)} ms median, ${(max(maps.bounded.pause) / 1000).toFixed(1)} ms max; heartbeat stall ${us(median(maps.bounded.stall))} median (goal <= ~${GOAL.boundedHoldMs} ms on a quiet machine)`,
    boundedHold <= GOAL.boundedHoldMs,
  );
}
