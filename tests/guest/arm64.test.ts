// aarch64 (issue 19): Debian bookworm's arm64 kernel (6.1) under qemu's TCG
// (tests/support/guest.ts), driven over SSH with the agent the provider deploys: the
// linux-arm64 bundle, picked by the guest's `uname -m`, runs native/arch/aarch64.cc. In it:
// - lock, status and unlock of a running target (tests/fixtures/target.c, static aarch64
//   build): its own measurements show nothing harmed (no nanosleep ended early, no EINTR,
//   every thread kept running) and every real-time signal sent during the cycles handled;
// - the kernel's side first (a SIGSTOP/SIGCONT makes the EINTR-prone calls fail with EINTR
//   on this kernel), then lock/unlock cycles: no EINTR in epoll_pwait, epoll_pwait2,
//   io_uring_enter, sigtimedwait, semtimedop (the threads the agent re-arms), nor in read,
//   nanosleep, futex, ppoll (the kernel restarts them);
// - a single-threaded event loop whose only thread is in epoll_pwait: every session takes
//   the re-arm path, where arm64 needs the call's first argument (orig_x0) that the stop no
//   longer shows (native/arch/aarch64.cc).
// Cycles are few: TCG runs the guest 10-50x slower than the host.
import { DeployedAgent } from "../../provider/agent/deploy";
import { loadBundle } from "../../provider/agent/bundle";
import { PROTOCOL_VERSION } from "../../src/agent/protocol";
import { HostReport, ProcessReport, ProcessResult } from "../../src/ops/types";
import { Guest } from "../support/guest";
import { AgentGuest, bootArm64WithAgent } from "../support/guest-agent";
import { GuestTarget, startGuestTarget } from "../support/guest-target";
import { eintrDiff, startGuestWaiters } from "../support/guest-waiters";
import { waitUntil } from "../support/target";

jest.setTimeout(30 * 60_000);

const CYCLES = Number(process.env.LOCKMEM_GUEST_CYCLES ?? 5);
const OP_TIMEOUT_MS = 300_000;
// glibc's epoll_wait is the epoll_pwait call on arm64 (no epoll_wait in the generic table).
const EINTR_PRONE = ["epoll_wait", "epoll_pwait", "epoll_pwait2", "io_uring_enter", "sigtimedwait", "semtimedop"];
const RESTARTED = ["read", "nanosleep", "futex", "ppoll"];
// A real-time signal (glibc's SIGRTMIN is 34): they queue, so none may go missing.
const SIGRT = 36;

let g: AgentGuest;
let guest: Guest;
let deployed: DeployedAgent;

beforeAll(async () => {
  g = await bootArm64WithAgent(["target", "waiters"], OP_TIMEOUT_MS);
  ({ guest, deployed } = g);
});

afterAll(async () => {
  await g?.stop();
});

const call = <T>(op: "lock" | "unlock" | "status", args: object): Promise<T> => g.call<T>(op, args);

const vmLckKb = async (pid: number): Promise<number> => Number(/VmLck:\s*(\d+) kB/.exec(await guest.check(`cat /proc/${pid}/status`))?.[1]);
const stateOf = async (pid: number): Promise<string> => (await guest.check(`cut -d' ' -f3 /proc/${pid}/stat`)).trim();

test("deploy picks the linux-arm64 bundle by the guest's uname -m", async () => {
  const arm64 = loadBundle("arm64").manifest;
  expect(deployed.version.arch).toBe("arm64");
  expect(deployed.dir.endsWith(`${arm64.version}-${arm64.id.slice(0, 16)}`)).toBe(true);
  const sums = await guest.check(`cd ${deployed.dir} && sha256sum lockmem.node lockmem-agent.js`);
  expect(sums).toContain(arm64.files["lockmem.node"]);
  expect(sums).toContain(arm64.files["lockmem-agent.js"]);
});

async function lockCycles(pid: number, minLockedKb: number): Promise<{ lockedKb: number; threads: string[] }> {
  let lockedKb = 0;
  const threads: string[] = [];
  for (let i = 0; i < CYCLES; i++) {
    const locked = await call<HostReport<ProcessResult>>("lock", { target: { pid }, mappings: { all: true } });
    expect(locked.processes[0]).toMatchObject({ pid, outcome: "done" });
    threads.push(locked.processes[0].action?.thread?.reason ?? "?");
    const status = await call<HostReport<ProcessReport>>("status", { target: { pid } });
    lockedKb = await vmLckKb(pid);
    expect(status.processes[0].vmLck).toBe(lockedKb * 1024);
    expect(lockedKb).toBeGreaterThan(minLockedKb);
    const unlocked = await call<HostReport<ProcessResult>>("unlock", { target: { pid }, mappings: { all: true } });
    expect(unlocked.processes[0]).toMatchObject({ pid, outcome: "done" });
    expect((await call<HostReport<ProcessReport>>("status", { target: { pid } })).processes[0].vmLck).toBe(0);
    expect(await vmLckKb(pid)).toBe(0);
  }
  return { lockedKb, threads };
}

test(`lock, status, unlock a target whose main thread sleeps ${CYCLES} times: no nanosleep ended early, no EINTR`, async () => {
  // The main thread in nanosleep is the one injected into (arm64 shows its call already
  // rewound onto the svc at the stop: the registers put back re-issue it); the control
  // thread waits in epoll_pwait (seized and re-armed with its remembered first argument).
  const t: GuestTarget = await startGuestTarget(guest, "--mode sleep --sleep-ms 50 --anon-mb 4 --control-epoll");
  const pid = t.pid;
  try {
    const before = await t.stats();
    const { lockedKb, threads } = await lockCycles(pid, 4 * 1024);
    // The main thread, found in its nanosleep (or, rarely, between two of them).
    expect(threads.every((r) => r.startsWith("main thread"))).toBe(true);
    expect(threads.some((r) => /blocked in (clock_)?nanosleep/.test(r))).toBe(true);
    const after = await waitUntil(
      async () => {
        const s = await t.stats();
        return s.sleep.done > before.sleep.done + CYCLES ? s : undefined;
      },
      "the main thread to go on sleeping",
      { timeoutMs: 120_000, intervalMs: 500 },
    );
    expect(after.sleep).toMatchObject({ violations: 0, eintr: 0 });
    expect(after.control.eintr).toBe(0);
    expect(await stateOf(pid)).not.toBe("T");
    console.log(`${g.image.name}: sleeping target, ${CYCLES} cycles of ${lockedKb} kB, injected into: ${threads[0]}; ${after.sleep.done} sleeps, none early, no EINTR`);
  } finally {
    await t.stop();
  }
});

test("a long relative nanosleep the lock interrupts resumes with the time it had left (restart_syscall), not a new full sleep", async () => {
  // 4 s sleeps, each session started at least 1.5 s into one: re-issued as the original
  // call, the sleep would end >= 1.5 s late; resumed through restart_syscall, as the
  // kernel resumes it by itself, it ends late by the pause alone (native/arch/aarch64.cc).
  const SLEEP_MS = 4000;
  const t = await startGuestTarget(guest, `--mode sleep --sleep-ms ${SLEEP_MS} --anon-mb 4 --control-epoll`);
  try {
    let seen = (await t.stats()).sleep.done;
    const reasons: string[] = [];
    for (const op of ["lock", "unlock", "lock", "unlock"] as const) {
      // A sleep has just begun (within one stats round trip): let 1.5 s of it pass.
      seen = await waitUntil(async () => {
        const done = (await t.stats()).sleep.done;
        return done > seen ? done : undefined;
      }, "the next sleep to begin", { timeoutMs: 60_000, intervalMs: 50 });
      await new Promise((r) => setTimeout(r, 1500));
      const r = await call<HostReport<ProcessResult>>(op, { target: { pid: t.pid }, mappings: { all: true } });
      expect(r.processes[0].error).toBeUndefined();
      reasons.push(r.processes[0].action?.thread?.reason ?? "?");
    }
    const after = await waitUntil(async () => {
      const s = await t.stats();
      return s.sleep.done > seen ? s : undefined;
    }, "the last interrupted sleep to end", { timeoutMs: 60_000, intervalMs: 200 });
    console.log(`${g.image.name}: ${SLEEP_MS} ms sleeps interrupted 4 times (${reasons.join(" / ")}): longest oversleep ${after.sleep.max_oversleep_us} us`);
    // After the first, the thread sleeps on in restart_syscall, which the next one interrupts.
    expect(reasons.every((x) => /blocked in ((clock_)?nanosleep|restart_syscall)/.test(x))).toBe(true);
    expect(reasons.some((x) => /blocked in (clock_)?nanosleep/.test(x))).toBe(true);
    expect(after.sleep).toMatchObject({ violations: 0, eintr: 0 });
    expect(after.sleep.max_oversleep_us).toBeLessThan(1_000_000);
  } finally {
    await t.stop();
  }
});

test.each([
  ["without SA_RESTART: the read ends with EINTR, as the signal alone would have ended it", false, 1],
  ["with SA_RESTART: the read goes on", true, 0],
])("a caught signal that arrives while the thread is held in read(), %s", async (_what, saRestart, eintrPerRun) => {
  // arm64's stop shows the read already rewound for a restart, as if no handler would run;
  // the session hands the kernel the state from before that rewind so that it decides
  // again (native/arch/aarch64.cc, Session::undoRestartFixup). The `held` hook of the
  // deployed agent sends the signal while the thread is held with its signals blocked.
  const RUNS = 4;
  const t = await startGuestTarget(guest, `--mode pipe --anon-mb 4 --count-signals ${SIGRT}${saRestart ? "" : " --no-sa-restart"}`);
  const marker = `/tmp/held-signal-${t.pid}`;
  try {
    const before = await t.stats();
    for (let i = 0; i < RUNS; i++) {
      const request = JSON.stringify({ v: PROTOCOL_VERSION, op: i % 2 === 0 ? "lock" : "unlock", args: { target: { pid: t.pid }, mappings: { all: true } } });
      const r = await guest.run(`printf '%s\\n' '${request}' | LOCKMEM_TEST_SIGNAL_AT=held:${SIGRT}:1:${marker} ${deployed.command}`, OP_TIMEOUT_MS);
      expect(r.code).toBe(0);
    }
    const sent = (await guest.check(`cat ${marker}`)).split("\n").filter(Boolean).length;
    const after = await waitUntil(async () => {
      const s = await t.stats();
      return (s.signals[String(SIGRT)] ?? 0) >= (before.signals[String(SIGRT)] ?? 0) + sent ? s : undefined;
    }, "every signal handled", { timeoutMs: 60_000, intervalMs: 300 });
    console.log(`${g.image.name}: ${sent} signals sent while held in read() (SA_RESTART ${saRestart}), read EINTR ${after.pipe.eintr - before.pipe.eintr}`);
    expect(sent).toBe(RUNS);
    expect({ handled: (after.signals[String(SIGRT)] ?? 0) - (before.signals[String(SIGRT)] ?? 0), readEintr: after.pipe.eintr - before.pipe.eintr }).toEqual({
      handled: RUNS,
      readEintr: RUNS * eintrPerRun,
    });
    expect(await stateOf(t.pid)).not.toBe("T");
  } finally {
    await guest.run(`rm -f ${marker}`);
    await t.stop();
  }
});

test(`signals sent all through ${CYCLES} lock/unlock cycles are all handled; spinning threads run on`, async () => {
  const t: GuestTarget = await startGuestTarget(guest, `--mode spin --threads 2 --thread-mode spin --anon-mb 4 --count-signals ${SIGRT}`);
  const pid = t.pid;
  const flag = `/tmp/signals-${pid}.on`;
  const count = `/tmp/signals-${pid}.count`;
  try {
    const before = await t.stats();
    // Real-time signals queue: the target must count exactly as many as kill(1) delivered.
    await guest.check(`touch ${flag}; (i=0; while [ -e ${flag} ]; do kill -${SIGRT} ${pid} && i=$((i+1)); sleep 0.01; done; echo $i > ${count}) </dev/null >/dev/null 2>&1 &`);
    await lockCycles(pid, 4 * 1024);
    await guest.check(`rm -f ${flag}`);
    const sent = await waitUntil(async () => {
      const text = (await guest.run(`cat ${count} 2>/dev/null`)).stdout.trim();
      return text ? Number(text) : undefined;
    }, "the signal sender to stop", { timeoutMs: 60_000, intervalMs: 200 });
    expect(sent).toBeGreaterThan(0);
    const after = await waitUntil(
      async () => {
        const s = await t.stats();
        return s.signals[String(SIGRT)] === sent ? s : undefined;
      },
      `all ${sent} signals to be handled`,
      { timeoutMs: 60_000, intervalMs: 500 },
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}: the target counted ${JSON.stringify((await t.stats()).signals)}`);
    });
    expect(after.main.progress).toBeGreaterThan(before.main.progress);
    after.threads.forEach((th, i) => expect(th.progress).toBeGreaterThan(before.threads[i].progress));
    console.log(`${g.image.name}: ${sent} signals sent during ${CYCLES} lock/unlock cycles, ${after.signals[String(SIGRT)]} handled`);
  } finally {
    await guest.run(`rm -f ${flag} ${count}`);
    await t.stop();
  }
});

test(`a stop makes the EINTR-prone calls fail with EINTR; ${CYCLES} lock/unlock cycles through the agent make none`, async () => {
  const w = await startGuestWaiters(guest, [...EINTR_PRONE, ...RESTARTED]);
  try {
    // The kernel's side first, so that "no EINTR" below means something on this kernel.
    await guest.check(`kill -STOP ${w.pid}`);
    await waitUntil(async () => /^T/.test(await stateOf(w.pid)), "the group stop", { timeoutMs: 60_000, intervalMs: 200 });
    await guest.check(`kill -CONT ${w.pid}`);
    const afterStop = await waitUntil(
      async () => {
        const c = await w.eintrs();
        return EINTR_PRONE.every((k) => c[k] >= 1) ? c : undefined;
      },
      "every EINTR-prone call to see the stop",
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    expect(Object.fromEntries(RESTARTED.map((k) => [k, afterStop[k]]))).toEqual(Object.fromEntries(RESTARTED.map((k) => [k, 0])));
    for (let i = 0; i < CYCLES; i++) {
      for (const op of ["lock", "unlock"] as const) {
        const r = await call<HostReport<ProcessResult>>(op, { target: { pid: w.pid } });
        expect(r.processes[0].error).toBeUndefined();
      }
    }
    expect(eintrDiff(await w.eintrs(), afterStop)).toEqual({});
    expect(await stateOf(w.pid)).not.toBe("T");
    console.log(`${g.image.name}: ${EINTR_PRONE.length} EINTR-prone and ${RESTARTED.length} restarted waiters, ${2 * CYCLES} sessions, no EINTR`);
  } finally {
    await w.stop();
  }
});

test(`a single-threaded event loop (its only thread in epoll_pwait: the re-arm path with orig_x0): no EINTR over ${CYCLES} cycles`, async () => {
  const w = await startGuestWaiters(guest, ["main=epoll_pwait"]);
  try {
    let rearmed = 0;
    for (let i = 0; i < CYCLES; i++) {
      for (const op of ["lock", "unlock"] as const) {
        const r = await call<HostReport<ProcessResult>>(op, { target: { pid: w.pid } });
        expect(r.processes[0].error).toBeUndefined();
        if (r.processes[0].action?.rearmed) rearmed++;
      }
    }
    expect(await w.eintrs()).toMatchObject({ main: 0 });
    expect(rearmed).toBe(2 * CYCLES);
    console.log(`${g.image.name}: event loop, ${rearmed} of ${2 * CYCLES} sessions re-armed epoll_pwait`);
  } finally {
    await w.stop();
  }
});

test("the kernel fact behind the arm64 re-arm: at a group stop, a thread that was in epoll_pwait shows no call (/proc syscall \"-1\")", async () => {
  const w = await startGuestWaiters(guest, ["main=epoll_pwait"]);
  try {
    const blocked = (await guest.check(`cat /proc/${w.pid}/syscall`)).trim();
    // Number 22 (epoll_pwait in the generic table) and its six arguments: the first is orig_x0.
    expect(blocked).toMatch(/^22( 0x[0-9a-f]+){8}$/);
    await guest.check(`kill -STOP ${w.pid}`);
    await waitUntil(async () => /^T/.test(await stateOf(w.pid)), "the group stop", { timeoutMs: 60_000, intervalMs: 200 });
    // do_signal() forgot the call (syscallno = -1) before get_signal() stopped the thread.
    const stopped = (await guest.check(`cat /proc/${w.pid}/syscall`)).trim();
    await guest.check(`kill -CONT ${w.pid}`);
    expect(stopped).toMatch(/^-1 0x[0-9a-f]+ 0x[0-9a-f]+$/);
    // Same pc as while blocked (after the svc): only x0 (now -EINTR) and the call's identity are gone.
    expect(stopped.split(" ")[2]).toBe(blocked.split(" ")[8]);
    console.log(`${g.image.name}: blocked "${blocked}", stopped "${stopped}"`);
  } finally {
    await w.stop();
  }
});
