// The test target itself: does it do what the real-process tests rely on, and do its
// detectors (nanosleep violations, EINTR counts, pipe check, stalls) actually detect?
// Everything is checked from /proc directly, never through lockmem's own readers.
import * as fs from "fs";
import * as net from "net";
import { createDataFile, startTarget, stopAllTargets, Target, TargetMode, waitUntil } from "./support/target";

afterEach(stopAllTargets);

const X86_64 = process.arch === "x64";
const NR = { read: 0, epoll_wait: 232, nanosleep: 35, clock_nanosleep: 230, accept: 43, accept4: 288, futex: 202 };

function procStatus(pid: number): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trim();
  }
  return fields;
}

/** Syscall number a thread is blocked in (first field of /proc/PID/task/TID/syscall), or null when running. */
function blockedSyscall(pid: number, tid: number): number | null {
  const first = fs.readFileSync(`/proc/${pid}/task/${tid}/syscall`, "utf8").split(" ")[0];
  return first === "running" ? null : Number(first);
}

function mapsLine(pid: number, startHex: string): string | undefined {
  const start = BigInt(startHex).toString(16);
  return fs
    .readFileSync(`/proc/${pid}/maps`, "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${start}-`));
}

function smapsField(pid: number, startHex: string, field: string): number {
  const start = BigInt(startHex).toString(16);
  const lines = fs.readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n");
  const at = lines.findIndex((l) => l.startsWith(`${start}-`));
  expect(at).toBeGreaterThanOrEqual(0);
  for (let i = at + 1; i < lines.length && !/^[0-9a-f]+-/.test(lines[i]); i++) {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`).exec(lines[i]);
    if (m) return Number(m[1]);
  }
  throw new Error(`no ${field} in smaps of ${startHex}`);
}

async function stopAndContinue(target: Target, heldMs: number): Promise<void> {
  process.kill(target.pid, "SIGSTOP");
  await waitUntil(() => target.state() === "T", `target ${target.pid} to be stopped`);
  const stoppedAt = Date.now();
  // The length of the stop is what the stall detector must report, not a synchronisation.
  await waitUntil(() => Date.now() - stoppedAt >= heldMs, `${heldMs} ms of stop`, { intervalMs: 5 });
  process.kill(target.pid, "SIGCONT");
  await waitUntil(() => target.state() !== "T", `target ${target.pid} to continue`);
}

describe("launcher", () => {
  test("a target is daemonized: not our child, pidfile written, control answers", async () => {
    const t = await startTarget({ mode: "idle" });
    expect(t.isAlive()).toBe(true);
    expect(Number(procStatus(t.pid).PPid)).not.toBe(process.pid);
    expect(fs.readFileSync(t.pidFile, "utf8").trim()).toBe(String(t.pid));
    expect(await t.control("ping")).toEqual({ ok: true, pong: true, pid: t.pid });
    expect(await t.control("no-such-command")).toMatchObject({ ok: false, error: expect.stringContaining("unknown") });
  });

  test("stop() leaves no process behind, and a second stop is harmless", async () => {
    const t = await startTarget({ mode: "spin", threads: 2, threadMode: "spin" });
    const pid = t.pid;
    await t.stop();
    expect(t.isAlive()).toBe(false);
    const stat = fs.existsSync(`/proc/${pid}/stat`) ? fs.readFileSync(`/proc/${pid}/stat`, "utf8") : "";
    // Gone, or a zombie waiting for init; never a running process.
    expect(stat === "" || / Z /.test(stat.slice(stat.lastIndexOf(")")))).toBe(true);
    await t.stop();
  });

  test("the exit command ends the target", async () => {
    const t = await startTarget();
    expect(await t.control("exit")).toMatchObject({ ok: true });
    await t.waitForExit();
  });

  test("a setup error is reported and leaves nothing running", async () => {
    const tag = `setup-error-${process.pid}-${Date.now()}`;
    await expect(startTarget({ files: ["/nonexistent/file"], tag })).rejects.toThrow(/open \/nonexistent\/file/);
    const running = fs.readdirSync("/proc").filter((p) => {
      try {
        return /^\d+$/.test(p) && fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes(tag);
      } catch {
        return false; // exited meanwhile
      }
    });
    expect(running).toEqual([]);
  });

  test("threadStates() sees one stopped thread among running ones", async () => {
    const t = await startTarget({ mode: "sleep", threads: 2 });
    const states = t.threadStates();
    expect([...states.keys()].sort()).toEqual(fs.readdirSync(`/proc/${t.pid}/task`).map(Number).sort());
    expect([...states.values()].every((s) => s !== "T" && s !== "t")).toBe(true);
    process.kill(t.pid, "SIGSTOP");
    await waitUntil(() => [...t.threadStates().values()].every((s) => s === "T"), "every thread stopped");
    process.kill(t.pid, "SIGCONT");
    await waitUntil(() => [...t.threadStates().values()].every((s) => s !== "T"), "every thread running");
  });

  test("a control client that hangs up before the reply does not hurt the target", async () => {
    const t = await startTarget({ anonMb: 1 });
    for (let i = 0; i < 20; i++) {
      // Many commands, then close at once: the target's replies meet a closed socket (EPIPE).
      await new Promise<void>((resolve) => {
        const sock = net.createConnection({ path: t.controlPath }, () => {
          sock.write("stats\n".repeat(50));
          sock.destroy();
        });
        sock.on("close", () => resolve());
        sock.on("error", () => undefined);
      });
    }
    expect(t.isAlive()).toBe(true);
    expect((await t.stats()).ok).toBe(true);
  });

  test("comm and tag are visible to target resolution", async () => {
    const t = await startTarget({ comm: "lm-fixture", tag: "fixture-tag-42" });
    expect(fs.readFileSync(`/proc/${t.pid}/comm`, "utf8").trim()).toBe("lm-fixture");
    expect(fs.readFileSync(`/proc/${t.pid}/cmdline`, "utf8").split("\0")).toContain("fixture-tag-42");
  });
});

describe("modes", () => {
  test.each<TargetMode>(["spin", "sleep", "pipe", "epoll", "idle", "heartbeat"])("%s starts and reports stats", async (mode) => {
    const t = await startTarget({ mode, sleepMs: 20 });
    const s = await t.stats();
    expect(s).toMatchObject({ ok: true, pid: t.pid, mode, main: { tid: t.pid } });
    expect(t.state()).not.toBe("T");
  });

  test("spin and heartbeat keep making progress", async () => {
    for (const mode of ["spin", "heartbeat"] as const) {
      const t = await startTarget({ mode });
      const first = (await t.stats()).main.progress;
      await t.waitForStats((s) => s.main.progress > first + 100, `${mode} progress`);
    }
  });

  test("sleep: every nanosleep lasts its full duration", async () => {
    const t = await startTarget({ mode: "sleep", sleepMs: 20 });
    const s = await t.waitForStats((x) => x.sleep.done >= 5, "5 sleeps");
    expect(s.sleep).toMatchObject({ violations: 0, eintr: 0 });
    expect(s.sleep.min_elapsed_us).toBeGreaterThanOrEqual(20_000);
    if (X86_64) expect([NR.nanosleep, NR.clock_nanosleep, null]).toContain(blockedSyscall(t.pid, t.pid));
  });

  test("sleep: a stop/continue restarts nanosleep with its remaining time (no violation)", async () => {
    const t = await startTarget({ mode: "sleep", sleepMs: 300 });
    await t.waitForStats((x) => x.sleep.done >= 1, "first sleep");
    await stopAndContinue(t, 50);
    const s = await t.waitForStats((x) => x.sleep.done >= 3, "3 sleeps");
    expect(s.sleep).toMatchObject({ violations: 0, eintr: 0 });
  });

  test("pipe: the main thread blocks in read and bytes written later arrive intact", async () => {
    const t = await startTarget({ mode: "pipe" });
    if (X86_64) await waitUntil(() => blockedSyscall(t.pid, t.pid) === NR.read, "main thread blocked in read");
    await t.writePipe(1000);
    await t.writePipe(4096);
    const s = await t.waitForStats((x) => x.pipe.read === 5096, "5096 bytes read");
    expect(s.pipe).toEqual({ written: 5096, read: 5096, mismatches: 0, eintr: 0, ok: true });
    expect(await t.control("write-pipe 5000")).toMatchObject({ ok: false });
  });

  test("pipe: read survives a stop/continue", async () => {
    const t = await startTarget({ mode: "pipe" });
    if (X86_64) await waitUntil(() => blockedSyscall(t.pid, t.pid) === NR.read, "main thread blocked in read");
    await stopAndContinue(t, 20);
    await t.writePipe(100);
    const s = await t.waitForStats((x) => x.pipe.read === 100, "100 bytes read");
    expect(s.pipe).toMatchObject({ ok: true, eintr: 0 });
  });

  test("epoll: ticks arrive without EINTR, and pipe bytes are read through epoll", async () => {
    const t = await startTarget({ mode: "epoll", epollTickMs: 20 });
    if (X86_64) await waitUntil(() => blockedSyscall(t.pid, t.pid) === NR.epoll_wait, "main thread in epoll_wait");
    await t.writePipe(64);
    const s = await t.waitForStats((x) => x.epoll.ticks >= 5 && x.pipe.read === 64, "5 ticks and 64 bytes");
    expect(s.epoll.eintr).toBe(0);
    expect(s.pipe.ok).toBe(true);
  });

  test("epoll: the EINTR counter detects an interrupted epoll_wait (stop/continue)", async () => {
    // signal(7): epoll_wait fails with EINTR after a stop and SIGCONT, even without handlers;
    // this is the harm lockmem must avoid, so the target must be able to see it.
    const t = await startTarget({ mode: "epoll", epollTickMs: 0 });
    if (X86_64) await waitUntil(() => blockedSyscall(t.pid, t.pid) === NR.epoll_wait, "main thread in epoll_wait");
    await stopAndContinue(t, 10);
    await t.waitForStats((x) => x.epoll.eintr >= 1, "epoll EINTR to be counted");
  });

  test("epoll with a timeout counts timeouts", async () => {
    const t = await startTarget({ mode: "epoll", epollTickMs: 0, epollTimeoutMs: 10 });
    const s = await t.waitForStats((x) => x.epoll.timeouts >= 3, "3 timeouts");
    expect(s.epoll.eintr).toBe(0);
  });

  test("idle: main thread waits in futex, control thread in accept", async () => {
    const t = await startTarget({ mode: "idle" });
    const s = await t.stats();
    if (X86_64) {
      await waitUntil(() => blockedSyscall(t.pid, t.pid) === NR.futex, "main thread in futex");
      await waitUntil(() => [NR.accept, NR.accept4].includes(blockedSyscall(t.pid, s.control.tid) ?? -1), "control in accept");
    }
  });

  test("--control-epoll puts the control thread in epoll_wait and it still answers", async () => {
    const t = await startTarget({ mode: "epoll", controlEpoll: true });
    const s = await t.stats();
    expect(s.control.epoll).toBe(true);
    if (X86_64) {
      await waitUntil(() => blockedSyscall(t.pid, s.control.tid) === NR.epoll_wait, "control thread in epoll_wait");
    }
    expect((await t.stats()).control.commands).toBe(2);
  });
});

describe("threads", () => {
  test.each(["spin", "sleep", "epoll"] as const)("every %s worker keeps making progress", async (threadMode) => {
    const t = await startTarget({ mode: "sleep", sleepMs: 50, threads: 4, threadMode, threadSleepMs: 5 });
    const first = await t.stats();
    expect(first.threads).toHaveLength(4);
    const tids = fs.readdirSync(`/proc/${t.pid}/task`).map(Number);
    for (const w of first.threads) expect(tids).toContain(w.tid);
    await t.waitForStats(
      (s) => s.threads.every((w, i) => w.progress >= first.threads[i].progress + 5),
      "every worker to advance by 5",
    );
    expect((await t.stats()).threads.every((w) => w.eintr === 0)).toBe(true);
  });
});

describe("heartbeat", () => {
  test("undisturbed, the longest stall is small", async () => {
    const t = await startTarget({ mode: "heartbeat", heartbeatUs: 100 });
    await t.resetStall();
    const first = (await t.stats()).heartbeat.iterations;
    const s = await t.waitForStats((x) => x.heartbeat.iterations > first + 1000, "1000 heartbeats");
    // Generous: a loaded CI machine can preempt us, but nothing like a stop.
    expect(s.heartbeat.max_stall_us).toBeLessThan(50_000);
    expect(s.heartbeat.period_us).toBe(100);
  });

  test("a stop shows as a stall of at least its length, and reset-stall clears it", async () => {
    const t = await startTarget({ mode: "heartbeat" });
    await t.resetStall();
    await stopAndContinue(t, 200);
    const s = await t.waitForStats((x) => x.heartbeat.max_stall_us >= 200_000, "a stall of the stop's length");
    expect(s.heartbeat.max_stall_us).toBeGreaterThanOrEqual(200_000);
    await t.resetStall();
    expect((await t.stats()).heartbeat.max_stall_us).toBeLessThan(200_000);
  });

  test("in-process mlockall runs on the heartbeat thread and its gap is reported", async () => {
    const t = await startTarget({ mode: "heartbeat", anonMb: 64, inprocessMlock: true });
    const locked = await t.control("mlockall current");
    expect(locked).toMatchObject({ ok: true, ret: 0, errno: 0, thread: "main" });
    expect(locked.ns as number).toBeGreaterThan(0);
    expect(locked.gap_us as number).toBeGreaterThanOrEqual(Math.floor((locked.ns as number) / 1000));
    expect(Number(procStatus(t.pid).VmLck.split(" ")[0])).toBeGreaterThanOrEqual(64 * 1024);
    expect((await t.stats()).vm_lck_kb).toBeGreaterThanOrEqual(64 * 1024);
    expect(await t.control("munlockall on=control")).toMatchObject({ ok: true, thread: "control" });
    expect(procStatus(t.pid).VmLck).toBe("0 kB");
  });

  test("in-process locking is refused unless enabled", async () => {
    const t = await startTarget({ mode: "heartbeat" });
    expect(await t.control("mlockall")).toMatchObject({ ok: false, error: expect.stringContaining("--inprocess-mlock") });
  });
});

describe("memory", () => {
  test("anon, PROT_NONE, shm and file mappings exist with the right permissions and residency", async () => {
    const file = createDataFile(3 * 4096 + 100);
    const xfile = createDataFile(8192);
    const t = await startTarget({ anonMb: 16, protNoneMb: 8, shmMb: 4, files: [file], execFiles: [xfile] });
    const s = await t.stats();
    const byKind = (k: string) => s.mappings.filter((m) => m.kind === k);
    expect(byKind("anon")).toHaveLength(1);
    const anon = byKind("anon")[0];
    expect(mapsLine(t.pid, anon.start)).toMatch(/ rw-p /);
    expect(smapsField(t.pid, anon.start, "Rss")).toBeGreaterThanOrEqual(16 * 1024);
    const none = byKind("prot_none")[0];
    expect(mapsLine(t.pid, none.start)).toMatch(/ ---p /);
    expect(none.bytes).toBe(8 << 20);
    const shm = byKind("shm")[0];
    expect(mapsLine(t.pid, shm.start)).toMatch(/ rw-s /);
    expect(smapsField(t.pid, shm.start, "Rss")).toBeGreaterThanOrEqual(4 * 1024);
    const [ro, rx] = byKind("file");
    expect(mapsLine(t.pid, ro.start)).toMatch(new RegExp(` r--p .*${ro.path}$`));
    expect(mapsLine(t.pid, rx.start)).toMatch(new RegExp(` r-xp .*${rx.path}$`));
    expect(smapsField(t.pid, ro.start, "Rss")).toBe(16);
  });

  test("mmap-anon adds a resident mapping after start; munmap removes it", async () => {
    const t = await startTarget();
    const r = await t.control("mmap-anon 8");
    expect(r).toMatchObject({ ok: true, bytes: 8 << 20 });
    expect(mapsLine(t.pid, r.start as string)).toMatch(/ rw-p /);
    expect(smapsField(t.pid, r.start as string, "Rss")).toBe(8 * 1024);
    expect((await t.stats()).mappings).toEqual([expect.objectContaining({ kind: "extra", start: r.start })]);
    expect(await t.control(`munmap ${r.start} ${8 << 20}`)).toMatchObject({ ok: true });
    expect(mapsLine(t.pid, r.start as string)).toBeUndefined();
  });
});

describe("restrictions", () => {
  test("--seccomp-kill-mlock: an in-process mlockall kills the target", async () => {
    const t = await startTarget({ seccomp: "kill-mlock", inprocessMlock: true, anonMb: 1 });
    expect(procStatus(t.pid).Seccomp).toBe("2");
    expect(procStatus(t.pid).NoNewPrivs).toBe("1");
    // munlockall is not filtered
    expect(await t.control("munlockall")).toMatchObject({ ok: true });
    await expect(t.control("mlockall", 3000)).rejects.toThrow();
    await t.waitForExit();
  });

  test("--seccomp-kill-mlock: mlock of one range kills too", async () => {
    const t = await startTarget({ seccomp: "kill-mlock", inprocessMlock: true, anonMb: 1 });
    const anon = (await t.stats()).mappings[0];
    await expect(t.control(`mlock ${anon.start} 4096`, 3000)).rejects.toThrow();
    await t.waitForExit();
  });

  test("--seccomp-errno-mlock: mlock, mlock2 and mlockall fail with EPERM and the target lives", async () => {
    const t = await startTarget({ seccomp: "errno-mlock", inprocessMlock: true, anonMb: 1, threads: 2 });
    expect(procStatus(t.pid).Seccomp).toBe("2");
    // TSYNC: every thread carries the filter
    for (const tid of fs.readdirSync(`/proc/${t.pid}/task`)) {
      expect(procStatus(t.pid).Seccomp_filters).toBe("1");
      expect(fs.readFileSync(`/proc/${t.pid}/task/${tid}/status`, "utf8")).toMatch(/^Seccomp:\s+2$/m);
    }
    const anon = (await t.stats()).mappings[0];
    expect(await t.control("mlockall")).toMatchObject({ ok: false, errno: 1 });
    expect(await t.control(`mlock ${anon.start} 4096`)).toMatchObject({ ok: false, errno: 1 });
    expect(await t.control(`mlock2 ${anon.start} 4096 0`)).toMatchObject({ ok: false, errno: 1 });
    expect(await t.control(`munlock ${anon.start} 4096`)).toMatchObject({ ok: true });
    expect(t.isAlive()).toBe(true);
    expect(procStatus(t.pid).VmLck).toBe("0 kB");
  });

  test("--seccomp-kill-other: a filter is there, yet mlock, mlock2 and mlockall work", async () => {
    const t = await startTarget({ seccomp: "kill-other", inprocessMlock: true, anonMb: 1 });
    expect(procStatus(t.pid).Seccomp).toBe("2");
    expect(procStatus(t.pid).Seccomp_filters).toBe("1");
    const anon = (await t.stats()).mappings[0];
    expect(await t.control(`mlock ${anon.start} 4096`)).toMatchObject({ ok: true });
    expect(await t.control(`mlock2 ${anon.start} 4096 0`)).toMatchObject({ ok: true });
    expect(await t.control(`munlock ${anon.start} 4096`)).toMatchObject({ ok: true });
    expect(await t.control("mlockall")).toMatchObject({ ok: true });
    expect(procStatus(t.pid).VmLck).not.toBe("0 kB");
    expect(await t.control("munlockall")).toMatchObject({ ok: true });
    expect(procStatus(t.pid).VmLck).toBe("0 kB");
    expect(t.isAlive()).toBe(true);
  });

  test("--drop-privs: nobody, no CAP_IPC_LOCK, the given memlock limit, still dumpable", async () => {
    const t = await startTarget({ mode: "sleep", dropPrivs: { uid: 65534, memlockKb: 4096 }, anonMb: 16, inprocessMlock: true });
    const status = procStatus(t.pid);
    expect(status.Uid.split(/\s+/)).toEqual(["65534", "65534", "65534", "65534"]);
    expect(status.Gid.split(/\s+/)[0]).toBe("65534");
    expect(status.CapEff).toBe("0000000000000000");
    expect(status.CapPrm).toBe("0000000000000000");
    expect(fs.readFileSync(`/proc/${t.pid}/limits`, "utf8")).toMatch(/^Max locked memory\s+4194304\s+4194304\s+bytes/m);
    // Dumpable: /proc/PID belongs to the process's own uid, not root.
    expect(fs.statSync(`/proc/${t.pid}/mem`).uid).toBe(65534);
    const s = await t.stats();
    expect(s).toMatchObject({ uid: 65534, euid: 65534 });
    // Without CAP_IPC_LOCK the limit applies: 16 MiB do not fit in 4 MiB.
    expect(await t.control("mlockall")).toMatchObject({ ok: false, errno: 12 });
    const anon = s.mappings.find((m) => m.kind === "anon")!;
    expect(await t.control(`mlock ${anon.start} ${1 << 20}`)).toMatchObject({ ok: true });
  });

  test("--drop-privs keeps the default 8 MiB limit", async () => {
    const t = await startTarget({ dropPrivs: { uid: 65534 } });
    expect(fs.readFileSync(`/proc/${t.pid}/limits`, "utf8")).toMatch(/^Max locked memory\s+8388608\s+8388608\s+bytes/m);
  });
});

describe("signals", () => {
  test("counted signals are all received by the main thread (RT signals queue)", async () => {
    const t = await startTarget({ mode: "sleep", sleepMs: 10, threads: 2, countSignals: ["USR1", "RTMIN+2"] });
    // glibc reserves two real-time signals for itself: SIGRTMIN is 34, RTMIN+2 is 36.
    const rt = 36;
    expect(Object.keys((await t.stats()).signals)).toEqual(["10", String(rt)]);
    for (let i = 0; i < 50; i++) process.kill(t.pid, rt);
    process.kill(t.pid, "SIGUSR1");
    const s = await t.waitForStats((x) => x.signals[String(rt)] === 50 && x.signals["10"] === 1, "51 signals");
    // With SA_RESTART a handler still ends nanosleep early with EINTR (never restarted):
    // counted apart from violations.
    expect(s.sleep.violations).toBe(0);
    expect(s.threads.every((w) => w.eintr === 0)).toBe(true);
    expect(s.control.eintr).toBe(0);
  });

  test("--no-sa-restart: a signal interrupts the pipe read and is counted as EINTR", async () => {
    const t = await startTarget({ mode: "pipe", countSignals: ["USR2"], saRestart: false });
    if (X86_64) await waitUntil(() => blockedSyscall(t.pid, t.pid) === NR.read, "main thread blocked in read");
    process.kill(t.pid, "SIGUSR2");
    const s = await t.waitForStats((x) => x.signals["12"] === 1 && x.pipe.eintr === 1, "USR2 and one EINTR");
    expect(s.pipe.eintr).toBe(1);
  });

  test("with SA_RESTART the pipe read is restarted after a handler", async () => {
    const t = await startTarget({ mode: "pipe", countSignals: ["USR2"] });
    if (X86_64) await waitUntil(() => blockedSyscall(t.pid, t.pid) === NR.read, "main thread blocked in read");
    process.kill(t.pid, "SIGUSR2");
    await t.waitForStats((x) => x.signals["12"] === 1, "USR2");
    await t.writePipe(10);
    const s = await t.waitForStats((x) => x.pipe.read === 10, "10 bytes");
    expect(s.pipe.eintr).toBe(0);
  });
});
