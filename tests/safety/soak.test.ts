// Soak: 1,000 lock/unlock cycles on a multi-threaded target through the library the agent
// serves. No failure; no growth in the target (VmRSS, open fds) nor in this process
// (RSS, V8 heap after a full GC, open fds). Samples are taken every SAMPLE_EVERY cycles
// after a warm-up; the median of the first samples is compared with that of the last
// ones, so that noise does not count, only a trend.
import * as fs from "fs";
import * as path from "path";
import * as v8 from "v8";
import * as vm from "vm";
import * as api from "../../src/api";
import { startTarget, stopAllTargets, workDir } from "../support/target";
import { isTraced, vmLckKb } from "../support/smaps";
import { startStress, stopStress } from "../support/stress";

jest.setTimeout(600_000);
afterAll(stopAllTargets);
// Quiet, or under CPU stress in the second pass of scripts/test.sh (races show under load).
beforeAll(startStress);
afterAll(stopStress);

beforeAll(() => {
  process.env.LOCKMEM_STATE_DIR = path.join(workDir(), `state-soak-${process.pid}`);
});

const CYCLES = 1000;
const WARMUP = 200;
const SAMPLE_EVERY = 50;
const KIB = 1024;

// A full GC without --expose-gc, so that the heap figure is what is live, not garbage.
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

function statusKb(pid: number | "self", field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

const fdCount = (pid: number | "self"): number => fs.readdirSync(`/proc/${pid}/fd`).length;

interface Sample {
  cycle: number;
  targetRssKb: number;
  targetFds: number;
  selfRssKb: number;
  selfHeapKb: number;
  selfFds: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

test(`${CYCLES} lock/unlock cycles on a multi-threaded target: no failure, no leak`, async () => {
  const t = await startTarget({ mode: "sleep", sleepMs: 5, threads: 4, threadMode: "epoll", threadSleepMs: 5, anonMb: 16 });
  const samples: Sample[] = [];
  const sample = (cycle: number): void => {
    gc();
    samples.push({
      cycle,
      targetRssKb: statusKb(t.pid, "VmRSS"),
      targetFds: fdCount(t.pid),
      selfRssKb: statusKb("self", "VmRSS"),
      selfHeapKb: Math.round(v8.getHeapStatistics().used_heap_size / KIB),
      selfFds: fdCount("self"),
    });
  };
  const before = await t.stats();
  const started = Date.now();
  let sessions = 0;
  const failures: string[] = [];
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    // Alternate the two shapes of batch: several mlock2 calls, and mlockall.
    const mappings = cycle % 10 === 0 ? { all: true } : undefined;
    try {
      const l = await api.lock({ target: { pid: t.pid }, mappings });
      const u = await api.unlock({ target: { pid: t.pid }, mappings });
      sessions += (l.processes[0].action?.sessions ?? 0) + (u.processes[0].action?.sessions ?? 0);
      // Every warning is a failure but the one `--all` always gives about PROT_NONE
      // reservations (issue 15: informational, the same every cycle).
      for (const w of [...l.processes[0].warnings, ...u.processes[0].warnings]) {
        if (!/PROT_NONE reservation\(s\).*locked/.test(w)) failures.push(`cycle ${cycle}: warning ${w}`);
      }
    } catch (err) {
      failures.push(`cycle ${cycle}: ${(err as Error).message}`);
      if (failures.length > 5) break;
    }
    if (cycle >= WARMUP && cycle % SAMPLE_EVERY === 0) sample(cycle);
  }
  const ms = Date.now() - started;
  const after = await t.waitForStats((s) => s.sleep.done > before.sleep.done + 2, "the target still sleeping");

  const head = samples.slice(0, 4);
  const tail = samples.slice(-4);
  const drift = (key: keyof Sample): number => median(tail.map((x) => x[key])) - median(head.map((x) => x[key]));
  const series = (key: keyof Sample): string => samples.map((x) => x[key]).join(" ");
  console.log(
    [
      `soak: ${CYCLES} lock/unlock cycles (${sessions} ptrace sessions) in ${ms} ms, ${(ms / CYCLES).toFixed(1)} ms a cycle; failures ${failures.length}`,
      `  drift (median of the last 4 samples minus the first 4, samples every ${SAMPLE_EVERY} cycles from cycle ${WARMUP}):`,
      `  target VmRSS ${drift("targetRssKb")} KiB, target fds ${drift("targetFds")}, own RSS ${drift("selfRssKb")} KiB, own V8 heap ${drift("selfHeapKb")} KiB, own fds ${drift("selfFds")}`,
      `  target VmRSS KiB: ${series("targetRssKb")}`,
      `  target fds: ${series("targetFds")}`,
      `  own RSS KiB: ${series("selfRssKb")}`,
      `  own V8 heap KiB: ${series("selfHeapKb")}`,
      `  own fds: ${series("selfFds")}`,
      `  target: sleeps ${after.sleep.done - before.sleep.done}, nanosleep violations ${after.sleep.violations}, EINTR ${after.sleep.eintr}, worker EINTR ${after.threads.map((x) => x.eintr).join("/")}`,
    ].join("\n"),
  );

  expect(failures).toEqual([]);
  expect(after.sleep.violations).toBe(0);
  expect(after.sleep.eintr).toBe(0);
  expect(after.threads.every((x) => x.eintr === 0)).toBe(true);
  expect(after.threads.every((x, i) => x.progress > before.threads[i].progress)).toBe(true);
  expect(vmLckKb(t.pid)).toBe(0);
  expect(isTraced(t.pid)).toBe(false);
  // The target: fds exactly stable; RSS within noise (its own stats replies allocate).
  expect(drift("targetFds")).toBe(0);
  expect(drift("targetRssKb")).toBeLessThanOrEqual(512);
  // This process: fds stable; heap and RSS without a trend. A leak of even 1 KiB a cycle
  // would show as ~800 KiB of heap between the first and last samples (V8 itself grows by
  // a few hundred KiB over the first ~1,000 cycles, then stays flat: seen over 4,000).
  // The RSS of a long-lived jest process (it has run every other suite before, in band)
  // grows with the allocator's and jest's own state, heap stable: printed, not judged here.
  // Native memory is judged in a fresh process below.
  expect(drift("selfFds")).toBeLessThanOrEqual(0);
  expect(drift("selfHeapKb")).toBeLessThanOrEqual(768);
});

test("the addon does not leak: 6,000 crash-safe sessions in a fresh process, flat RSS", async () => {
  const t = await startTarget({ mode: "sleep", sleepMs: 10, threads: 2, threadMode: "spin" });
  const script = `
    const { native } = require(${JSON.stringify(path.resolve(__dirname, "../../dist/src/native.js"))});
    const fs = require("fs");
    const pid = ${t.pid};
    const maps = fs.readFileSync("/proc/" + pid + "/maps", "utf8").split("\\n");
    const vd = maps.find((l) => l.endsWith("[vdso]")).split(" ")[0].split("-").map((x) => BigInt("0x" + x));
    const page = BigInt("0x" + maps.find((l) => l.includes(" r-xp ")).split("-")[0]);
    const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(fs.readFileSync("/proc/self/status", "utf8"))[1]);
    (async () => {
      const samples = [];
      for (let round = 0; round < 12; round++) {
        for (let i = 0; i < 500; i++) {
          // A hold refused with EAGAIN (the group stop not reached in 2 s: no CPU time for the
          // target under stress) is retried, as the library does (src/inject.ts), up to 3 times.
          for (let attempt = 1; ; attempt++) {
            try {
              await native().runBatch({ pid, tid: pid, vdsoStart: vd[0], vdsoEnd: vd[1], stopOnError: true, stopProcess: true,
                journalPath: ${JSON.stringify(path.join(workDir(), `soak-${process.pid}.regs`))}, eintrSyscalls: [232],
                ops: [{ nr: 325, args: [page, 4096n, 0n], undo: { nr: 150, args: [page, 4096n] } }, { nr: 150, args: [page, 4096n] }] });
              break;
            } catch (e) {
              if (e.code !== "EAGAIN" || attempt >= 3) throw e;
            }
          }
        }
        global.gc();
        samples.push(rss());
      }
      console.log(JSON.stringify(samples));
    })();`;
  const { execFileSync } = await import("child_process");
  const out = execFileSync(process.env.LOCKMEM_SYSTEM_NODE || process.execPath, ["--expose-gc", "-e", script], { encoding: "utf8" });
  const samples = JSON.parse(out.trim().split("\n").pop() as string) as number[];
  console.log(`addon soak: 6000 sessions, RSS KiB after each 500: ${samples.join(" ")}`);
  // After a warm-up (each libuv pool thread gets its own malloc arena on first use):
  // no trend beyond allocator noise.
  expect(samples[samples.length - 1] - samples[5]).toBeLessThanOrEqual(2 * KIB);
  expect(t.isAlive()).toBe(true);
  expect(isTraced(t.pid)).toBe(false);
});
