// The core and EINTR promises in real x86_64 guest kernels (issue 19): Debian bullseye's
// 5.10, bookworm's 6.1 and trixie's 6.12, each booted under qemu (tests/support/guest.ts)
// and driven over SSH with the agent the provider deploys (provider/agent/deploy.ts, the
// same path as tests/remote and a fleet's hosts). In each guest:
// - lock every mapping (mlockall) of a target, see it locked in the agent's status and in
//   the guest's own /proc (VmLck), unlock, see 0 locked;
// - the waiters fixture (tests/fixtures/waiters.c, as tests/safety/eintr.test.ts): first the
//   kernel's side (a SIGSTOP/SIGCONT makes the EINTR-prone calls fail with EINTR, so the
//   fixture can see one on this kernel), then lock/unlock cycles through the agent: no
//   EINTR in any call, on a thread pool and on a single-threaded event loop (every thread
//   in epoll_wait: the re-arm path).
// Cycles are few: TCG runs the guest 10-50x slower than the host.
import { ensureAgent } from "../../provider/agent/deploy";
import { SshTransport, closeAll } from "../../provider/transport/ssh";
import { resultOf } from "../../provider/transport/types";
import { PROTOCOL_VERSION } from "../../src/agent/protocol";
import { HostReport, ProcessReport, ProcessResult } from "../../src/ops/types";
import { bootGuest, buildGuest, Guest, GuestImage, GuestSuite } from "../support/guest";
import * as path from "path";
import { staticBinary, staticFixture } from "../support/guest-binaries";
import { eintrDiff, startGuestWaiters } from "../support/guest-waiters";
import { waitUntil } from "../support/target";

jest.setTimeout(20 * 60_000);

const GUESTS: { suite: GuestSuite; linux: string }[] = [
  { suite: "bullseye", linux: "5.10" },
  { suite: "bookworm", linux: "6.1" },
  { suite: "trixie", linux: "6.12" },
];
const CYCLES = Number(process.env.LOCKMEM_GUEST_CYCLES ?? 5);
const OP_TIMEOUT_MS = 180_000;

// What a stop does to each call (signal(7), checked on the host by tests/safety/eintr).
const EINTR_PRONE = ["epoll_wait", "epoll_pwait", "io_uring_enter", "sigtimedwait", "semtimedop"];
const RESTARTED = ["read", "nanosleep", "futex", "ppoll"];

// Per kernel, the facts kernel-facts.c found: printed as one table at the end.
const facts = new Map<string, Record<string, string>>();

afterAll(async () => {
  await closeAll();
  if (facts.size === 0) return;
  const names = [...new Set([...facts.values()].flatMap((f) => Object.keys(f)))];
  const kernels = [...facts.keys()];
  const rows = [["fact", ...kernels], ...names.map((n) => [n, ...kernels.map((k) => facts.get(k)?.[n] ?? "-")])];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log("kernel facts (tests/guest/kernel-facts.c):\n" + rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ")).join("\n"));
});

function kernelAtLeast(release: string, major: number, minor: number): boolean {
  const [a, b] = release.split(".").map(Number);
  return a > major || (a === major && b >= minor);
}

describe.each(GUESTS)("$suite/amd64 guest (Linux $linux)", ({ suite, linux }) => {
  let image: GuestImage;
  let guest: Guest;
  let agent: SshTransport;
  let testsStarted = 0;

  beforeAll(async () => {
    image = await buildGuest(suite, "amd64");
    guest = await bootGuest(image);
    testsStarted = Date.now();
    await guest.upload(staticFixture("waiters", "amd64"), "/tmp/waiters");
    await guest.upload(staticFixture("target", "amd64"), "/tmp/target");
    const deployed = await ensureAgent(guest.connection(), { timeoutMs: OP_TIMEOUT_MS });
    agent = new SshTransport(guest.connection(), { agentCommand: deployed.command, agentVersion: deployed.version, persistent: true });
  });

  afterAll(async () => {
    await closeAll();
    await guest?.stop();
    if (guest) {
      console.log(
        `guest ${image.name} (${image.kernelRelease}): build ${image.cached ? `cached (${image.elapsedMs} ms; first build took ${image.buildSeconds} s)` : `cold ${image.buildSeconds} s`}, ` +
          `boot to sshd ${(guest.bootMs / 1000).toFixed(1)} s, tests ${((Date.now() - testsStarted) / 1000).toFixed(1)} s`,
      );
    }
  });

  async function call<T>(op: "lock" | "unlock" | "status", args: object): Promise<T> {
    const reply = await agent.run({ v: PROTOCOL_VERSION, op, args } as never, { timeoutMs: OP_TIMEOUT_MS });
    return resultOf<T>(reply, agent.where);
  }
  const vmLckKb = async (pid: number): Promise<number> => Number(/VmLck:\s*(\d+) kB/.exec(await guest.check(`cat /proc/${pid}/status`))?.[1]);

  test(`runs Debian's ${linux} kernel`, async () => {
    expect(image.kernelRelease.startsWith(`${linux}.`)).toBe(true);
    expect((await guest.check("uname -r")).trim()).toBe(image.kernelRelease);
  });

  test("the kernel facts lockmem relies on hold", async () => {
    await guest.upload(staticBinary(path.join(__dirname, "kernel-facts.c"), "amd64"), "/tmp/kernel-facts");
    const found = Object.fromEntries(
      (await guest.check("/tmp/kernel-facts")).trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    facts.set(image.kernelRelease, found);
    expect(found).toMatchObject({
      // Since 5.2: the real mask, so the journal holds the thread's own mask (native/session.cc).
      getsigmask_in_ppoll: "real",
      // x86_64's ppoll: how a thread blocked in a call is told (src/proc/tasks.ts).
      task_syscall: "271",
      seccomp_get_filter: "1",
      suspend_seccomp: "ok",
      mlock2_onfault: "ok",
      // smaps names VM_LOCKONFAULT "lf" only since Linux 6.2 (before: "??"), and lockmem reads
      // "lf" (src/select.ts isLockOnFault): see the on-fault test below.
      onfault_flag: kernelAtLeast(image.kernelRelease, 6, 2) ? "lf" : "??",
      mlockall_onfault: "ok",
      status_missing: "",
      smaps_missing: "",
      // In lockmem's EINTR table; absent before 5.11, where no thread can block in it.
      epoll_pwait2: kernelAtLeast(image.kernelRelease, 5, 11) ? "ok" : "ENOSYS",
    });
  });

  test("lock all mappings, status shows them locked; unlock, nothing locked", async () => {
    const w = await startGuestWaiters(guest, ["nanosleep"]);
    try {
      const target = { pid: w.pid };
      const locked = await call<HostReport<ProcessResult>>("lock", { target, mappings: { all: true } });
      expect(locked.processes[0]).toMatchObject({ pid: w.pid, outcome: "done" });
      const status = await call<HostReport<ProcessReport>>("status", { target });
      expect(status.processes[0].vmLck).toBeGreaterThan(0);
      expect(status.processes[0].vmLck).toBe((await vmLckKb(w.pid)) * 1024);
      expect(status.processes[0].mappings.filter((m) => m.vmLocked).length).toBeGreaterThan(0);

      const unlocked = await call<HostReport<ProcessResult>>("unlock", { target, mappings: { all: true } });
      expect(unlocked.processes[0]).toMatchObject({ pid: w.pid, outcome: "done" });
      const after = await call<HostReport<ProcessReport>>("status", { target });
      expect(after.processes[0].vmLck).toBe(0);
      expect(after.processes[0].mappings.filter((m) => m.vmLocked)).toEqual([]);
      expect(await vmLckKb(w.pid)).toBe(0);
    } finally {
      await w.stop();
    }
  });

  // smaps prints VM_LOCKONFAULT as "??" before Linux 6.2 (kernel facts above): lockmem read an
  // on-fault lock as a full one there (the report said onFault: false, and a full lock after it
  // was planned as "already locked as wanted") until src/select.ts read the "??" in its place.
  test("an on-fault lock reads as on-fault, and a full lock after it populates the mappings", async () => {
    const w = await startGuestWaiters(guest, ["nanosleep"]);
    try {
      const target = { pid: w.pid };
      await call<HostReport<ProcessResult>>("lock", { target, mappings: { all: true }, onFault: true });
      const onFault = await call<HostReport<ProcessReport>>("status", { target });
      expect(onFault.processes[0].mappings.filter((m) => m.vmLocked && m.onFault).length).toBeGreaterThan(0);
      const full = await call<HostReport<ProcessResult>>("lock", { target, mappings: { all: true } });
      expect(full.processes[0].action?.changedMappings).toBeGreaterThan(0);
      const after = await call<HostReport<ProcessReport>>("status", { target });
      expect(after.processes[0].mappings.filter((m) => m.onFault)).toEqual([]);
    } finally {
      await call<HostReport<ProcessResult>>("unlock", { target: { pid: w.pid }, mappings: { all: true } }).catch(() => undefined);
      await w.stop();
    }
  });

  test(`a stop makes the EINTR-prone calls fail with EINTR; ${CYCLES} lock/unlock cycles through the agent make none`, async () => {
    // epoll_pwait2 exists from Linux 5.11: on 5.10 it would return ENOSYS in a loop.
    const prone = kernelAtLeast(image.kernelRelease, 5, 11) ? [...EINTR_PRONE, "epoll_pwait2"] : EINTR_PRONE;
    const w = await startGuestWaiters(guest, [...prone, ...RESTARTED]);
    try {
      // The kernel's side first, so that "no EINTR" below means something on this kernel.
      await guest.check(`kill -STOP ${w.pid}`);
      await waitUntil(async () => /^T/.test((await guest.check(`cut -d' ' -f3 /proc/${w.pid}/stat`)).trim()), "the group stop", { timeoutMs: 60_000, intervalMs: 200 });
      await guest.check(`kill -CONT ${w.pid}`);
      const afterStop = await waitUntil(
        async () => {
          const c = await w.eintrs();
          return prone.every((k) => c[k] >= 1) ? c : undefined;
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
      expect((await guest.check(`cut -d' ' -f3 /proc/${w.pid}/stat`)).trim()).not.toBe("T");
    } finally {
      await w.stop();
    }
  });

  test(`RT signals sent during ${CYCLES} lock/unlock cycles are all delivered (target in ppoll)`, async () => {
    // As tests/safety/signals.test.ts: RT signals queue, so the target's own count must equal
    // what was sent. Its main thread waits in ppoll with a temporary mask: where
    // PTRACE_GETSIGMASK's answer changed in Linux 5.2 (kernel facts above).
    const RT = 34 + 2; // glibc's SIGRTMIN + 2
    const ready = await guest.check(`/tmp/target --daemonize --mode ppoll --control /tmp/target.ctl --count-signals ${RT} </dev/null`);
    const pid = Number(/ready pid=(\d+)/.exec(ready)?.[1]);
    expect(pid).toBeGreaterThan(0);
    const counted = async (): Promise<number> => {
      // The target's control socket, from the guest's Node (one JSON line back).
      const js = 'const s=require("net").connect(process.argv[1]);let d="";s.on("data",(c)=>{d+=c;if(d.includes("\\n")){console.log(d.trim());s.destroy();}});s.write("stats\\n");';
      const stats = JSON.parse(await guest.check(`node -e '${js}' /tmp/target.ctl`)) as { signals: Record<string, number> };
      return stats.signals[String(RT)];
    };
    try {
      await guest.check("rm -f /tmp/stop-signals");
      // A sender in the guest, paced (busybox usleep) so that the queue never fills; it counts
      // only the signals the kernel accepted, and prints the count when told to stop.
      const sender = guest.run(`n=0; while [ ! -e /tmp/stop-signals ]; do kill -${RT} ${pid} 2>/dev/null && n=$((n+1)); usleep 2000; done; echo $n`, OP_TIMEOUT_MS);
      for (let i = 0; i < CYCLES; i++) {
        for (const op of ["lock", "unlock"] as const) {
          const r = await call<HostReport<ProcessResult>>(op, { target: { pid } });
          expect(r.processes[0].error).toBeUndefined();
        }
      }
      await guest.check("touch /tmp/stop-signals");
      const sent = Number((await sender).stdout.trim());
      expect(sent).toBeGreaterThan(0);
      await waitUntil(async () => (await counted()) === sent, `the target to count all ${sent} signals`, { timeoutMs: 60_000, intervalMs: 500 });
      console.log(`${image.name}: ${sent} RT signals sent during ${2 * CYCLES} sessions, all delivered`);
    } finally {
      await guest.run(`kill -9 ${pid}; rm -f /tmp/target.ctl /tmp/stop-signals`);
    }
  });

  test(`a single-threaded event loop (its only thread in epoll_wait: the re-arm path): no EINTR over ${CYCLES} cycles`, async () => {
    const w = await startGuestWaiters(guest, ["main=epoll_wait"]);
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
      // Its only thread is in epoll_wait: every session must have taken the re-arm path.
      expect(rearmed).toBe(2 * CYCLES);
      console.log(`${image.name}: event loop, ${rearmed} of ${2 * CYCLES} sessions re-armed epoll_wait`);
    } finally {
      await w.stop();
    }
  });
});
