import { readFileSync } from "fs";
import * as path from "path";
import { parseMemlockLimit, RLIM_INFINITY } from "../../src/proc/limits";
import { isKernelThread, parseStat } from "../../src/proc/stat";
import { hasCapIpcLock, parseStatus, readStatus } from "../../src/proc/status";

const fixture = (name: string): string => readFileSync(path.join(__dirname, "../fixtures/proc", name), "utf8");

describe("parseStatus", () => {
  test("reads a sleeping process", () => {
    const status = parseStatus(fixture("status-sleep.txt"));
    expect(status).toMatchObject({
      name: "sleep",
      state: "S",
      uid: { real: 0, effective: 0 },
      seccomp: 0,
      tracerPid: 0,
      sigPnd: 0n,
      shdPnd: 0n,
      sigBlk: 0n,
      threads: 1,
      vmLck: 0,
    });
    expect(status.tgid).toBe(status.pid);
    expect(status.vmSize).toBeGreaterThan(0);
    expect(status.vmSize % 1024).toBe(0);
    expect(status.vmRss).toBeGreaterThan(0);
    expect(status.capEff).toBe(0x1fffeffffffn);
  });

  test("a kernel thread has no Vm lines: sizes are 0", () => {
    const status = parseStatus(fixture("status-kthreadd.txt"));
    expect(status).toMatchObject({ name: "kthreadd", pid: 2, vmSize: 0, vmLck: 0, vmRss: 0 });
  });

  test("reads uid, seccomp, masks and VmLck from a hand-made unprivileged target", () => {
    const text = [
      "Name:\tmy server",
      "State:\tS (sleeping)",
      "Tgid:\t4242",
      "Pid:\t4242",
      "PPid:\t1",
      "TracerPid:\t99",
      "Uid:\t1000\t1001\t1001\t1001",
      "VmSize:\t  262144 kB",
      "VmLck:\t    8192 kB",
      "VmRSS:\t    1000 kB",
      "Threads:\t4",
      "SigPnd:\t0000000000000000",
      "ShdPnd:\t0000000000000100",
      "SigBlk:\t0000000000010000",
      "CapEff:\t0000000000000000",
      "Seccomp:\t2",
    ].join("\n");
    const status = parseStatus(text);
    expect(status).toMatchObject({
      name: "my server",
      uid: { real: 1000, effective: 1001 },
      vmSize: 256 * 1024 * 1024,
      vmLck: 8 * 1024 * 1024,
      tracerPid: 99,
      threads: 4,
      seccomp: 2,
      shdPnd: 0x100n,
      sigBlk: 0x10000n,
    });
    expect(hasCapIpcLock(status)).toBe(false);
  });

  test("hasCapIpcLock looks at bit 14 of CapEff", () => {
    expect(hasCapIpcLock({ capEff: 1n << 14n })).toBe(true);
    expect(hasCapIpcLock({ capEff: (1n << 14n) - 1n })).toBe(false);
    expect(hasCapIpcLock(parseStatus(fixture("status-sleep.txt")))).toBe(true);
  });

  test("a missing required line is a format error", () => {
    expect(() => parseStatus("Name:\tx\n")).toThrow(expect.objectContaining({ code: "EINTERNAL" }));
  });

  test("readStatus reads our own process", async () => {
    const status = await readStatus(process.pid);
    expect(status.pid).toBe(process.pid);
    expect(status.threads).toBeGreaterThanOrEqual(1);
  });
});

describe("parseMemlockLimit", () => {
  test("reads the default 8 MiB limit", () => {
    expect(parseMemlockLimit(fixture("limits-default.txt"))).toEqual({ soft: 8388608n, hard: 8388608n });
  });

  test("unlimited is RLIM_INFINITY", () => {
    const text = fixture("limits-default.txt").replace(
      /^Max locked memory.*$/m,
      "Max locked memory         65536                unlimited            bytes     ",
    );
    expect(parseMemlockLimit(text)).toEqual({ soft: 65536n, hard: RLIM_INFINITY });
    expect(RLIM_INFINITY).toBe(18446744073709551615n);
  });

  test("no row is a format error", () => {
    expect(() => parseMemlockLimit("Limit Soft Limit Hard Limit Units\n")).toThrow(expect.objectContaining({ code: "EINTERNAL" }));
  });
});

describe("parseStat", () => {
  const tail = "S 4147 4147 2992 0 -1 4194304 102 0 0 0 0 0 0 0 20 0 1 0 33344 3133440 380 18446744073709551615 0 0";

  test("reads a plain line", () => {
    expect(parseStat(`4155 (cat) ${tail}`)).toEqual({
      pid: 4155,
      comm: "cat",
      state: "S",
      ppid: 4147,
      flags: 4194304,
      startTime: "33344",
    });
  });

  test("comm with spaces and ') (' is split at the last ')'", () => {
    const stat = parseStat(`77 (evil) (1 2) x) ${tail}\n`);
    expect(stat.comm).toBe("evil) (1 2) x");
    expect(stat.ppid).toBe(4147);
    expect(stat.startTime).toBe("33344");
  });

  test("kernel threads: pid 2, children of kthreadd, or PF_KTHREAD", () => {
    expect(isKernelThread({ pid: 2, ppid: 0, flags: 0 })).toBe(true);
    expect(isKernelThread({ pid: 40, ppid: 2, flags: 0 })).toBe(true);
    expect(isKernelThread({ pid: 40, ppid: 1, flags: 0x00200000 })).toBe(true);
    expect(isKernelThread({ pid: 40, ppid: 1, flags: 4194304 })).toBe(false);
  });

  test("garbage is a format error", () => {
    expect(() => parseStat("hello")).toThrow(expect.objectContaining({ code: "EINTERNAL" }));
    expect(() => parseStat("12 (x) S 1")).toThrow(expect.objectContaining({ code: "EINTERNAL" }));
  });
});
