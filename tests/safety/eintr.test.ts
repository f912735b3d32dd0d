// No EINTR, from any call, at any load (issue 13). One thread per blocking call in a real
// target (tests/fixtures/waiters.c), each counting the EINTRs it gets:
// 1. the kernel first: a plain SIGSTOP/SIGCONT makes each call listed as EINTR-prone fail
//    with EINTR (so the fixture can see one), and every call that does is in lockmem's
//    table (src/proc/tasks.ts); the controls (read, futex, ...) restart by themselves;
// 2. then lockmem: lock/unlock sessions on the same kind of target, and on the issue's
//    event loop (main thread in epoll_wait, a second thread that sleeps and writes to it):
//    zero EINTR. Run quiet and under CPU stress (tests/support/stress.ts).
import * as api from "../../src/api";
import { syscallName, syscallsReturningEintrOnStop } from "../../src/proc/tasks";
import { procState, safetySuite } from "../support/safety";
import { stressLabel, stressMode } from "../support/stress";
import { waitUntil } from "../support/target";
import { startWaiters, Waiters } from "../support/waiters";

jest.setTimeout(15 * 60_000);

// Each kind of the fixture, the syscall it blocks in, and whether a stop makes it fail
// with EINTR on Linux (signal(7) and the kernel sources; checked in the first test).
const KINDS: { kind: string; syscall: string; eintr: boolean }[] = [
  { kind: "epoll_wait", syscall: "epoll_wait", eintr: true },
  { kind: "epoll_pwait", syscall: "epoll_pwait", eintr: true },
  { kind: "epoll_pwait2", syscall: "epoll_pwait2", eintr: true },
  { kind: "io_uring_enter", syscall: "io_uring_enter", eintr: true },
  { kind: "connect_timeout", syscall: "connect", eintr: true },
  { kind: "accept_timeout", syscall: "accept", eintr: true },
  { kind: "recvfrom_timeout", syscall: "recvfrom", eintr: true },
  { kind: "recvmsg_timeout", syscall: "recvmsg", eintr: true },
  { kind: "sendto_timeout", syscall: "sendto", eintr: true },
  { kind: "semop", syscall: "semop", eintr: true },
  { kind: "semtimedop", syscall: "semtimedop", eintr: true },
  { kind: "sigtimedwait", syscall: "rt_sigtimedwait", eintr: true },
  { kind: "io_getevents", syscall: "io_getevents", eintr: true },
  // Controls: the kernel restarts these (ERESTART*), with or without lockmem.
  { kind: "io_pgetevents", syscall: "io_pgetevents", eintr: false },
  { kind: "mq_timedreceive", syscall: "mq_timedreceive", eintr: false },
  { kind: "msgrcv", syscall: "msgrcv", eintr: false },
  { kind: "read", syscall: "read", eintr: false },
  { kind: "nanosleep", syscall: "nanosleep", eintr: false },
  { kind: "futex", syscall: "futex", eintr: false },
  { kind: "ppoll", syscall: "ppoll", eintr: false },
];
const CYCLES = Number(process.env.LOCKMEM_EINTR_CYCLES ?? 200);

safetySuite("eintr");

function nonZero(counts: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0));
}

test(`the kernel: a stop makes exactly the listed calls fail with EINTR, and lockmem lists them (${stressLabel()})`, async () => {
  const w = await startWaiters(KINDS.map((k) => k.kind));
  try {
    for (let round = 1; round <= 3; round++) {
      process.kill(w.pid, "SIGSTOP");
      await waitUntil(() => procState(w.pid) === "T", "the group stop");
      process.kill(w.pid, "SIGCONT");
      await waitUntil(() => KINDS.filter((k) => k.eintr).every((k) => w.eintrs()[k.kind] >= round), `every EINTR-prone call to see stop ${round}`, { timeoutMs: 30_000 });
    }
    const listed = new Set(syscallsReturningEintrOnStop().map((nr) => syscallName(nr)));
    const seen = nonZero(w.eintrs());
    for (const k of KINDS) {
      expect({ kind: k.kind, eintr: (seen[k.kind] ?? 0) > 0 }).toEqual({ kind: k.kind, eintr: k.eintr });
      if (k.eintr) expect({ kind: k.kind, listed: listed.has(k.syscall) }).toEqual({ kind: k.kind, listed: true });
    }
  } finally {
    w.stop();
  }
});

async function cycles(w: Waiters, n: number): Promise<{ sessions: number; maxPauseUs: number }> {
  let sessions = 0;
  let maxPauseUs = 0;
  for (let i = 0; i < n; i++) {
    for (const r of [await api.lock({ target: { pid: w.pid } }), await api.unlock({ target: { pid: w.pid } })]) {
      const p = r.processes[0];
      expect(p.error).toBeUndefined();
      if (p.action?.pauseUs !== undefined) {
        sessions += p.action.sessions ?? 1;
        maxPauseUs = Math.max(maxPauseUs, p.action.pauseUs);
      }
    }
  }
  return { sessions, maxPauseUs };
}

test(`${CYCLES} lock/unlock cycles: no EINTR in any blocking call (${stressLabel()})`, async () => {
  const w = await startWaiters(KINDS.map((k) => k.kind));
  try {
    const { sessions, maxPauseUs } = await cycles(w, CYCLES);
    console.log(`eintr table (${stressMode()}): ${sessions} sessions on ${KINDS.length} waiting threads, longest hold ${maxPauseUs} us, EINTR seen: ${JSON.stringify(nonZero(w.eintrs()))}`);
    expect(nonZero(w.eintrs())).toEqual({});
    expect(procState(w.pid)).not.toBe("T");
  } finally {
    w.stop();
  }
});

test(`the event loop of the issue (main thread in epoll_wait, a ticker thread writing to it): no EINTR over ${CYCLES} cycles (${stressLabel()})`, async () => {
  const w = await startWaiters(["main=epoll_wait", "ticker"]);
  try {
    const { sessions } = await cycles(w, CYCLES);
    console.log(`event loop (${stressMode()}): ${sessions} sessions, EINTR seen: ${JSON.stringify(nonZero(w.eintrs()))}`);
    expect(nonZero(w.eintrs())).toEqual({});
  } finally {
    w.stop();
  }
});

test(`hundreds of threads over epoll_wait, futex, nanosleep, read and ppoll: no EINTR (${stressLabel()})`, async () => {
  const w = await startWaiters(["main=epoll_wait", "epoll_wait:x100", "futex:x100", "nanosleep:x100", "read:x100", "ppoll:x100", "io_uring_enter:x20"]);
  try {
    const { sessions, maxPauseUs } = await cycles(w, Math.max(10, Math.round(CYCLES / 10)));
    console.log(`520 threads (${stressMode()}): ${sessions} sessions, longest hold ${maxPauseUs} us, EINTR seen: ${JSON.stringify(nonZero(w.eintrs()))}`);
    expect(nonZero(w.eintrs())).toEqual({});
  } finally {
    w.stop();
  }
});
