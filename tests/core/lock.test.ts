// Lock and unlock real processes started by the tests; the kernel's view (smaps, status,
// limits) is read independently of the code under test.
import * as fs from "fs";
import * as path from "path";
import * as api from "../../src/api";
import { LockError } from "../../src/errors";
import { createDataFile, startTarget, stopAllTargets, Target, waitUntil, workDir } from "../support/target";
import { isLockedVma, isTraced, kernelMappings, lockFingerprint, memlockLimit, vmLckKb } from "../support/smaps";

jest.setTimeout(120_000);
afterAll(stopAllTargets);

const stateDir = path.join(workDir(), `state-core-${process.pid}`);
beforeAll(() => {
  process.env.LOCKMEM_STATE_DIR = stateDir;
});

function lockedPaths(pid: number): string[] {
  return kernelMappings(pid)
    .filter(isLockedVma)
    .map((m) => `${m.perms.slice(0, 3)} ${m.path}`);
}

function expectTargetHealthy(t: Target): void {
  expect(t.isAlive()).toBe(true);
  expect(t.state()).not.toBe("T");
  expect(t.state()).not.toBe("t");
  expect(isTraced(t.pid)).toBe(false);
}

async function expectError(p: Promise<unknown>, code: string, text?: RegExp): Promise<LockError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LockError);
    const e = err as LockError;
    expect(e.code).toBe(code);
    if (text) expect(e.message).toMatch(text);
    return e;
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

describe("selection changes exactly the chosen mappings", () => {
  test("default r-x,rwx by pid: every executable mapping, nothing else; unlock restores", async () => {
    const t = await startTarget({ mode: "idle", anonMb: 4 });
    expect(lockedPaths(t.pid)).toEqual([]);
    const report = await api.lock({ target: { pid: t.pid } });
    const p = report.processes[0];
    const kernel = kernelMappings(t.pid);
    for (const m of kernel) {
      const wanted = (m.perms.startsWith("r-x") || m.perms.startsWith("rwx")) && !/^\[(vdso|vsyscall)\]$/.test(m.path);
      expect(`${m.start.toString(16)} ${m.perms} ${m.path} ${isLockedVma(m)}`).toBe(`${m.start.toString(16)} ${m.perms} ${m.path} ${wanted}`);
      // Locked and faulted in (smaps Locked: is proportional for shared pages, so check Rss).
      if (wanted) expect(m.rssKb * 1024).toBe(Number(m.end - m.start));
    }
    expect(p.selection?.inSync).toBe(true);
    expect(p.action?.changedMappings).toBeGreaterThan(0);
    expectTargetHealthy(t);

    // A second lock has nothing to do.
    const again = await api.lock({ target: { pid: t.pid } });
    expect(again.processes[0].action?.syscalls).toBe(0);

    await api.unlock({ target: { pid: t.pid } });
    expect(lockedPaths(t.pid)).toEqual([]);
    expect(vmLckKb(t.pid)).toBe(0);
    expectTargetHealthy(t);
  });

  test("by path glob and kind, found by pid file, name and command line", async () => {
    const data = createDataFile(256 * 1024);
    const t = await startTarget({ mode: "idle", anonMb: 2, files: [data], comm: "lm-sel-test", tag: "sel-glob-kind-tag" });

    await api.lock({ target: { pidFile: t.pidFile }, mappings: { paths: [`**/${path.basename(data)}`] } });
    expect(lockedPaths(t.pid)).toEqual([`r-- ${data}`]);

    await api.lock({ target: { name: "lm-sel-test" }, mappings: { kinds: ["heap", "stack"] } });
    const locked = lockedPaths(t.pid);
    expect(locked).toContain(`r-- ${data}`);
    expect(locked.some((l) => l.endsWith("[stack]"))).toBe(true);
    expect(locked.filter((l) => !l.endsWith("[stack]") && !l.endsWith("[heap]") && l !== `r-- ${data}`)).toEqual([]);

    // Unlock only the file; heap and stack stay locked.
    await api.unlock({ target: { cmdline: "sel-glob-kind-tag" }, mappings: { paths: [data] } });
    expect(lockedPaths(t.pid)).not.toContain(`r-- ${data}`);
    expect(lockedPaths(t.pid).some((l) => l.endsWith("[stack]"))).toBe(true);

    await api.unlock({ target: { pid: t.pid }, mappings: { all: true } });
    expect(lockedPaths(t.pid)).toEqual([]);
    expectTargetHealthy(t);
  });

  test("all (mlockall) with PROT_NONE reservations; on-fault; future", async () => {
    const t = await startTarget({ mode: "idle", anonMb: 2, protNoneMb: 16, inprocessMlock: true });
    const onFault = await api.lock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] }, onFault: true });
    expect(onFault.processes[0].action?.changedMappings).toBeGreaterThan(0);
    const anon = kernelMappings(t.pid).filter((m) => m.path === "" && m.perms.startsWith("rw"));
    expect(anon.length).toBeGreaterThan(0);
    for (const m of anon) expect(m.flags).toEqual(expect.arrayContaining(["lo", "lf"]));
    // PROT_NONE is never locked by a per-mapping selection.
    for (const m of kernelMappings(t.pid).filter((m) => m.perms.startsWith("---"))) expect(isLockedVma(m)).toBe(false);

    await api.lock({ target: { pid: t.pid }, mappings: { all: true }, future: true });
    // mlockall locks every VMA; a mapping made afterwards is locked too (MCL_FUTURE).
    expect(kernelMappings(t.pid).filter((m) => m.path === "[heap]" || m.path === "[stack]").every(isLockedVma)).toBe(true);
    const reply = await t.control("mmap-anon 1");
    expect(reply.ok).toBe(true);
    const fresh = kernelMappings(t.pid).filter((m) => m.path === "" && m.perms.startsWith("rw") && !isLockedVma(m));
    expect(fresh).toEqual([]);

    await api.unlock({ target: { pid: t.pid }, mappings: { all: true } });
    expect(vmLckKb(t.pid)).toBe(0);
    await t.control("mmap-anon 1");
    expect(vmLckKb(t.pid)).toBe(0); // MCL_FUTURE cleared
    expectTargetHealthy(t);
  });

  test("all matches: several processes by command line", async () => {
    const a = await startTarget({ mode: "idle", tag: "multi-match-tag" });
    const b = await startTarget({ mode: "idle", tag: "multi-match-tag" });
    await expectError(api.lock({ target: { cmdline: "multi-match-tag" } }), "EAMBIGUOUS", new RegExp(`${a.pid}[\\s\\S]*${b.pid}|${b.pid}[\\s\\S]*${a.pid}`));
    expect(lockedPaths(a.pid)).toEqual([]);
    const report = await api.lock({ target: { cmdline: "multi-match-tag", match: "all" } });
    expect(report.processes.map((p) => p.pid).sort()).toEqual([a.pid, b.pid].sort());
    expect(lockedPaths(a.pid).length).toBeGreaterThan(0);
    expect(lockedPaths(b.pid).length).toBeGreaterThan(0);
    await api.unlock({ target: { cmdline: "multi-match-tag", match: "all" }, mappings: { all: true } });
    expect(vmLckKb(a.pid) + vmLckKb(b.pid)).toBe(0);
  });
});

describe("the target keeps working", () => {
  test("nanosleep lasts its full duration, threads keep running, never left stopped", async () => {
    const t = await startTarget({ mode: "sleep", sleepMs: 50, threads: 3, threadMode: "spin", anonMb: 8 });
    const before = await t.stats();
    for (let i = 0; i < 20; i++) {
      await api.lock({ target: { pid: t.pid }, mappings: { all: true } });
      await api.unlock({ target: { pid: t.pid }, mappings: { all: true } });
    }
    const after = await t.waitForStats((s) => s.sleep.done > before.sleep.done + 3, "more sleeps");
    expect(after.sleep.violations).toBe(0);
    expect(after.sleep.eintr).toBe(0);
    for (const th of after.threads) {
      const prev = before.threads.find((x) => x.tid === th.tid);
      expect(th.progress).toBeGreaterThan(prev ? prev.progress : 0);
    }
    expectTargetHealthy(t);
  });

  test("a reader blocked in read() gets the bytes written later", async () => {
    const t = await startTarget({ mode: "pipe" });
    for (let i = 0; i < 10; i++) {
      await api.lock({ target: { pid: t.pid } });
      await api.unlock({ target: { pid: t.pid } });
    }
    await t.writePipe(64);
    const s = await t.waitForStats((x) => x.pipe.read >= 64, "pipe bytes");
    expect(s.pipe.mismatches).toBe(0);
    expect(s.pipe.eintr).toBe(0);
    expect(s.pipe.ok).toBe(true);
    expectTargetHealthy(t);
  });

  test("epoll_wait never returns EINTR, with and without a timeout, even when every thread waits in it", async () => {
    for (const epollTimeoutMs of [-1, 5000]) {
      const t = await startTarget({ mode: "epoll", epollTimeoutMs, epollTickMs: 0, controlEpoll: true });
      let rearmed = 0;
      for (let i = 0; i < 10; i++) {
        const r = await api.lock({ target: { pid: t.pid } });
        if (r.processes[0].action?.rearmed) rearmed++;
        await api.unlock({ target: { pid: t.pid } });
      }
      const s = await t.stats();
      expect(s.epoll.eintr).toBe(0);
      expect(s.control.eintr).toBe(0);
      expect(rearmed).toBeGreaterThan(0); // the path under test was taken
      expectTargetHealthy(t);
    }
  });

  test("a target stopped by SIGSTOP is locked and stays stopped", async () => {
    const t = await startTarget({ mode: "spin", anonMb: 2 });
    process.kill(t.pid, "SIGSTOP");
    const deadline = Date.now() + 5000;
    while (t.state() !== "T" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(t.state()).toBe("T");
    await api.lock({ target: { pid: t.pid } });
    expect(lockedPaths(t.pid).length).toBeGreaterThan(0);
    // Detached, the thread goes back into the group stop on its own.
    await waitUntil(() => t.state() === "T" && !isTraced(t.pid), "the target to be stopped again, untraced");
    expect(t.state()).toBe("T");
    process.kill(t.pid, "SIGCONT");
    const s0 = await t.stats();
    const s1 = await t.waitForStats((s) => s.main.progress > s0.main.progress, "progress after SIGCONT");
    expect(s1.main.progress).toBeGreaterThan(s0.main.progress);
  });
});

describe("refusals change nothing", () => {
  test("seccomp target is never made to call mlock", async () => {
    const t = await startTarget({ mode: "idle", seccomp: "kill-mlock" });
    const before = lockFingerprint(t.pid);
    const e = await expectError(api.lock({ target: { pid: t.pid } }), "ESECCOMP", /seccomp/);
    expect(e.hint).toMatch(/memlock/);
    expect(t.isAlive()).toBe(true);
    expect(lockFingerprint(t.pid)).toBe(before);
  });

  test("unprivileged target (another uid, no CAP_IPC_LOCK): clear ENOMEM diagnosis, nothing changed", async () => {
    const t = await startTarget({ mode: "idle", anonMb: 4, dropPrivs: { uid: 65534, memlockKb: 1024 } });
    expect(fs.readFileSync(`/proc/${t.pid}/status`, "utf8")).toMatch(/^Uid:\s+65534/m);
    const before = memlockLimit(t.pid);
    const fp = lockFingerprint(t.pid);
    const e = await expectError(api.lock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] } }), "ENOMEM", /RLIMIT_MEMLOCK/);
    expect(e.message).toMatch(/lacks CAP_IPC_LOCK/);
    expect(e.hint).toMatch(/raise-limit/);
    const doctor = await api.doctor({ target: { pid: t.pid }, mappings: { kinds: ["anon"] } });
    const checks = Object.fromEntries(doctor.processes[0].checks.map((c) => [c.check, c]));
    expect(checks["RLIMIT_MEMLOCK"].ok).toBe(false);
    expect(checks["CAP_IPC_LOCK"].detail).toMatch(/missing privilege "ipc_lock" \(euid = 65534\)/);
    expect(checks["kernel"]).toMatchObject({ ok: true, detail: expect.stringMatching(/^Linux \S+ \(lockmem needs 4\.4 or later; tested on /) });
    expect(doctor.processes[0].ok).toBe(false);
    // Raising needs more than its hard limit allows: refused with the reason.
    await expectError(api.lock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] }, raiseMemlockLimit: true }), "EPERM", /CAP_SYS_RESOURCE/);
    expect(lockFingerprint(t.pid)).toBe(fp);
    expect(memlockLimit(t.pid)).toEqual(before);
    expect(t.isAlive()).toBe(true);
  });

  test("raise-limit: locks a target without CAP_IPC_LOCK, unlock restores its limit", async () => {
    const data = createDataFile(4 * 1024 * 1024);
    const sel = { paths: [data] };
    const t = await startTarget({ mode: "idle", files: [data], dropCapIpcLock: { memlockKb: 1024 } });
    const before = memlockLimit(t.pid);
    expect(before.soft).toBe("1048576");
    expect(fs.readFileSync(`/proc/${t.pid}/status`, "utf8")).not.toMatch(/^CapEff:\s+0*1f*ffff$/m);
    const fp = lockFingerprint(t.pid);
    await expectError(api.lock({ target: { pid: t.pid }, mappings: sel }), "ENOMEM", /RLIMIT_MEMLOCK/);
    expect(lockFingerprint(t.pid)).toBe(fp);

    const r = await api.lock({ target: { pid: t.pid }, mappings: sel, raiseMemlockLimit: true });
    expect(r.processes[0].action?.limitRaised?.from.soft).toBe("1048576");
    expect(Number(memlockLimit(t.pid).soft)).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    expect(vmLckKb(t.pid)).toBeGreaterThanOrEqual(4096);
    expect(fs.existsSync(path.join(stateDir, "limits", `${t.pid}-${t.startTime}.json`))).toBe(true);

    // A second invocation (as another operator would) restores it on unlock.
    const u = await api.unlock({ target: { pid: t.pid }, mappings: sel });
    expect(u.processes[0].action?.limitRestored?.to.soft).toBe("1048576");
    expect(memlockLimit(t.pid)).toEqual(before);
    expect(vmLckKb(t.pid)).toBe(0);
    expect(fs.existsSync(path.join(stateDir, "limits", `${t.pid}-${t.startTime}.json`))).toBe(false);
  });

  test("bad input: no such pid, our own pid, bad regex, bad glob, bad permissions", async () => {
    await expectError(api.lock({ target: { pid: 4194000 } }), "ENOTARGET");
    await expectError(api.lock({ target: { pid: process.pid } }), "EUSAGE", /itself/);
    const e = await expectError(api.lock({ target: { cmdline: "(" } }), "EUSAGE");
    expect(e.field).toBe("target.cmdline");
    const t = await startTarget({ mode: "idle" });
    const fp = lockFingerprint(t.pid);
    const g = await expectError(api.lock({ target: { pid: t.pid }, mappings: { paths: ["[heap"] } }), "EUSAGE");
    expect(g.field).toMatch(/^mappings\.paths/);
    const p = await expectError(api.lock({ target: { pid: t.pid }, mappings: { permissions: ["rx"] } }), "EUSAGE");
    expect(p.field).toMatch(/^mappings\.permissions/);
    await expectError(api.lock({ target: { pid: t.pid, name: "x" } }), "EUSAGE");
    expect(lockFingerprint(t.pid)).toBe(fp);
  });

  test("a target that exits mid-operation: clear error, nothing left behind", async () => {
    const t = await startTarget({ mode: "idle", protNoneMb: 0 });
    // A large not-yet-resident mapping makes the lock take a while.
    await t.control("mmap-anon 1536");
    const pending = api.lock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] } });
    // Kill it while lockmem holds it (TracerPid is set), i.e. inside the mlock.
    const traced = (): boolean => isTraced(t.pid);
    const deadline = Date.now() + 10_000;
    while (!traced() && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(traced()).toBe(true);
    process.kill(t.pid, "SIGKILL");
    try {
      await pending;
    } catch (err) {
      expect(err).toBeInstanceOf(LockError);
      expect((err as LockError).code).toBe("ESRCH");
      expect((err as LockError).message).toMatch(/exited/);
    }
    // Dying takes a moment: the kernel unmaps (and unlocks) its 1.5 GiB first.
    await t.waitForExit(20_000);
    expect(t.isAlive()).toBe(false);
  });
});

describe("bounded pauses: an undo that fails is reported, not dropped", () => {
  // A second tracer (Python's ctypes, a real PTRACE_SEIZE) takes the target as soon as the
  // first chunks are locked: the next chunk cannot attach and fails, and so does undoing
  // the chunks before it. The error must say so, and which ranges stay locked.
  const TRACER = [
    "import ctypes, sys, time",
    "libc = ctypes.CDLL(None, use_errno=True)",
    "pid = int(sys.argv[1])",
    "print('ready', flush=True)",
    "deadline = time.time() + 60",
    "while time.time() < deadline:",
    "    lck = [l for l in open(f'/proc/{pid}/status') if l.startswith('VmLck:')][0]",
    "    if int(lck.split()[1]) > 0 and libc.ptrace(ctypes.c_long(0x4206), ctypes.c_long(pid), None, None) == 0:",
    "        print('seized', flush=True)",
    "        sys.stdin.readline()",
    "        sys.exit(0)",
    "sys.exit(3)",
  ].join("\n");

  test("a chunk fails, its undo fails too: the error names what stays locked and the fix", async () => {
    const t = await startTarget({ mode: "idle", protNoneMb: 0 });
    // Not yet resident: locking faults it in, so the chunks take a while.
    await t.control("mmap-anon 1024");
    const { spawn } = await import("child_process");
    const tracer = spawn("python3", ["-c", TRACER, String(t.pid)], { stdio: ["pipe", "pipe", "inherit"] });
    let out = "";
    tracer.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => tracer.on("exit", (code) => r(code)));
    try {
      await waitUntil(() => out.includes("ready"), "the tracer to start");
      const err = await api.lock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] }, maxPauseMs: 1 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(out).toContain("seized");
      expect(err).toBeInstanceOf(LockError);
      const e = err as LockError;
      expect(e.message).toMatch(new RegExp(`already traced by process ${tracer.pid}`));
      expect(e.message).not.toMatch(/nothing stays locked/);
      const m = /undoing this attempt failed too: (\d+) of (\d+) chunk\(s\) could not be unlocked again .*: ([\d.]+ \w+) in (\d+) range\(s\) may stay locked \(([^)]*)\)/.exec(e.message);
      expect(m).not.toBeNull();
      expect(Number(m![1])).toBe(Number(m![2]));
      expect(e.hint).toMatch(new RegExp(`lockmem unlock --pid ${t.pid}`));
      // The ranges named are exactly what the kernel has locked.
      const ranges = m![5].split(", ").map((r) => r.split("-").map((x) => BigInt(`0x${x}`)));
      expect(ranges.length).toBe(Number(m![4]));
      const lockedBytes = ranges.reduce((a, [s, end]) => a + (end - s), 0n);
      expect(BigInt(vmLckKb(t.pid)) * 1024n).toBe(lockedBytes);
      for (const km of kernelMappings(t.pid).filter(isLockedVma)) {
        expect(ranges.some(([s, end]) => km.start >= s && km.end <= end)).toBe(true);
      }
    } finally {
      tracer.stdin.end();
      await exited;
    }
    // Once the other tracer is gone, the unlock the hint names clears it.
    expect(isTraced(t.pid)).toBe(false);
    await api.unlock({ target: { pid: t.pid }, mappings: { kinds: ["anon"] } });
    expect(vmLckKb(t.pid)).toBe(0);
    expectTargetHealthy(t);
  });
});
