import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import { parseTaskSyscall, pickInjectionThread, readThreads, syscallName, ThreadInfo } from "../../src/proc/tasks";

const NANOSLEEP = 35;
const EPOLL_WAIT = 232;
const FUTEX = 202;
const RECVFROM = 45;
const RT_SIGTIMEDWAIT = 128;

function thread(tid: number, activity: ThreadInfo["activity"]): ThreadInfo {
  return { tid, state: "S", activity };
}

describe("parseTaskSyscall", () => {
  test("real line of a thread in clock_nanosleep (sleep 100)", () => {
    expect(parseTaskSyscall("230 0x0 0x0 0x7ffcf56395a0 0x7ffcf56395e0 0x0 0x0 0x7ffcf5639588 0x7fb8bc0bd503\n")).toEqual({
      kind: "syscall",
      nr: 230,
    });
  });
  test("running and not in a syscall", () => {
    expect(parseTaskSyscall("running\n")).toEqual({ kind: "running" });
    expect(parseTaskSyscall("-1 0x7ffd5c0a2d18 0x55f1c4a8e1a9\n")).toEqual({ kind: "user" });
  });
  test("anything else is unknown", () => {
    expect(parseTaskSyscall("")).toEqual({ kind: "unknown" });
  });
});

describe("pickInjectionThread", () => {
  const pid = 100;

  test("prefers a thread outside any syscall over the main thread in nanosleep", () => {
    const choice = pickInjectionThread(
      [thread(100, { kind: "syscall", nr: NANOSLEEP }), thread(101, { kind: "user" })],
      pid,
      "x64",
    );
    expect(choice).toMatchObject({ tid: 101, mayInterruptSyscall: false });
    expect(choice?.reason).toMatch(/not in a syscall/);
  });

  test("the main thread wins ties", () => {
    const choice = pickInjectionThread(
      [thread(99, { kind: "syscall", nr: FUTEX }), thread(100, { kind: "syscall", nr: NANOSLEEP }), thread(101, { kind: "running" })],
      pid,
      "x64",
    );
    expect(choice?.tid).toBe(101);
    const tie = pickInjectionThread([thread(99, { kind: "syscall", nr: FUTEX }), thread(100, { kind: "syscall", nr: NANOSLEEP })], pid, "x64");
    expect(tie?.tid).toBe(100);
    expect(tie?.reason).toMatch(/^main thread: .*nanosleep.*restarts transparently/);
  });

  test("avoids epoll_wait in another thread when any thread is in a restartable call", () => {
    const choice = pickInjectionThread(
      [thread(100, { kind: "syscall", nr: FUTEX }), thread(102, { kind: "syscall", nr: EPOLL_WAIT }), thread(105, { kind: "syscall", nr: FUTEX })],
      pid,
      "x64",
    );
    expect(choice).toMatchObject({ tid: 100, mayInterruptSyscall: false });
  });

  test("the main thread in epoll_wait is taken itself (re-armed in our hands, never put back into the group stop)", () => {
    const choice = pickInjectionThread(
      [thread(100, { kind: "syscall", nr: EPOLL_WAIT }), thread(105, { kind: "syscall", nr: FUTEX }), thread(106, { kind: "running" })],
      pid,
      "x64",
    );
    expect(choice).toMatchObject({ tid: 100, mayInterruptSyscall: true });
    expect(choice?.reason).toMatch(/main thread.*epoll_wait/);
  });

  test("a socket call that may have a timeout beats a certain EINTR", () => {
    const choice = pickInjectionThread(
      [thread(101, { kind: "syscall", nr: RT_SIGTIMEDWAIT }), thread(103, { kind: "syscall", nr: RECVFROM })],
      pid,
      "x64",
    );
    expect(choice).toMatchObject({ tid: 103, mayInterruptSyscall: true });
  });

  test("a single-threaded event loop: epoll_wait is chosen and flagged", () => {
    const choice = pickInjectionThread([thread(100, { kind: "syscall", nr: EPOLL_WAIT })], pid, "x64");
    expect(choice).toMatchObject({ tid: 100, mayInterruptSyscall: true });
    expect(choice?.reason).toMatch(/epoll_wait/);
  });

  test("arm64 numbers differ", () => {
    expect(syscallName(22, "arm64")).toBe("epoll_pwait");
    expect(syscallName(EPOLL_WAIT, "x64")).toBe("epoll_wait");
    expect(syscallName(9999, "x64")).toBe("syscall 9999");
    const choice = pickInjectionThread([thread(102, { kind: "syscall", nr: 22 }), thread(101, { kind: "syscall", nr: 98 })], pid, "arm64");
    expect(choice?.tid).toBe(101);
  });

  test("no threads, no choice", () => {
    expect(pickInjectionThread([], pid, "x64")).toBeUndefined();
  });
});

describe("readThreads", () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(path.join(tmpdir(), "lockmem-tasks-"));
    const addTask = (tid: number, state: string, syscall: string | undefined): void => {
      const dir = path.join(root, "100", "task", String(tid));
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, "stat"), `${tid} (worker) ${state} 1 100 100 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 3 0 5000 0 0 0\n`);
      if (syscall !== undefined) writeFileSync(path.join(dir, "syscall"), syscall);
    };
    addTask(100, "S", "232 0x3 0x7ffd 0x80 0xffffffff 0x0 0x0 0x7ffd 0x7f00\n");
    addTask(101, "R", "running\n");
    addTask(102, "S", undefined);
    mkdirSync(path.join(root, "100", "task", "not-a-tid"));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  test("lists each thread with its state and syscall; a vanished syscall file leaves the thread out", async () => {
    // task 102 has a stat but no syscall file, as when it exits between the two reads.
    const threads = await readThreads(100, root);
    expect(threads).toEqual([
      { tid: 100, state: "S", activity: { kind: "syscall", nr: 232 } },
      { tid: 101, state: "R", activity: { kind: "running" } },
    ]);
  });

  test("our own process has at least the main thread", async () => {
    const threads = await readThreads(process.pid);
    expect(threads.map((t) => t.tid)).toContain(process.pid);
  });

  test("a missing process is ESRCH", async () => {
    await expect(readThreads(100, path.join(root, "nothing"))).rejects.toMatchObject({ code: "ESRCH" });
  });
});
