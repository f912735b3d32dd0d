// A corpus of generated malformed requests: the agent answers every one with a structured
// EUSAGE/EPROTO error and exit status 2, never throws, never reaches the host library and
// never changes the target named in the request. A second corpus does the same for the
// CLI's flags and the contents of pid files (issue 14), run in-process.
import { execFileSync, spawn, spawnSync, ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { CommanderError } from "commander";
import { AgentCore, handleRequest } from "../../src/agent/server";
import { MAX_REQUEST_BYTES } from "../../src/agent/protocol";
import { buildProgram } from "../../src/cli/main";
import { LockError } from "../../src/errors";
import { native } from "../../src/native";
import { AgentBundle, buildAgentBundle } from "../support/agent-bundle";
import { Target, startTarget, stopAllTargets } from "../support/target";

/** Deterministic PRNG (mulberry32), so a failing case can be replayed from its index. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function generateCorpus(count: number, pid: number, seed = 4242): string[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const int = (n: number): number => Math.floor(r() * n);
  const valid = (): { [k: string]: Json } => {
    const op = pick(["status", "plan", "lock", "unlock", "doctor"] as const);
    const target: { [k: string]: Json } = { pid };
    if (r() < 0.3) target.match = pick(["one", "all"]);
    const args: { [k: string]: Json } = { target };
    if (r() < 0.5) args.mappings = { permissions: ["r-x"], kinds: ["file"] };
    if (op === "lock" || op === "plan") args.onFault = r() < 0.5;
    const req: { [k: string]: Json } = { v: 1, op, args };
    if (op === "lock" || op === "unlock") req.waitMs = 10;
    return req;
  };
  const wrongValues: Json[] = ["1", "", true, false, null, [], {}, [1], { a: 1 }, 1.5, -1, 0, 2 ** 53, -(2 ** 31), 1e308];
  const randomString = (n: number): string =>
    Array.from({ length: n }, () => String.fromCharCode(pick([0, 10, 34, 92, 65, 0x7f, 0xd800, 0x1f600 & 0xffff, 0x2028]) + int(3))).join("");
  /** Objects that are closed (additionalProperties: false) in a valid request, by path. */
  const closedObjects = (req: { [k: string]: Json }): { [k: string]: Json }[] => {
    const out: { [k: string]: Json }[] = [req];
    const args = req.args as { [k: string]: Json } | undefined;
    if (args) {
      out.push(args, args.target as { [k: string]: Json });
      if (args.mappings) out.push(args.mappings as { [k: string]: Json });
    }
    return out;
  };

  const mutations: Array<() => string> = [
    // truncated JSON: a prefix of an object text is never a complete JSON value
    () => {
      const s = JSON.stringify(valid());
      return s.slice(0, int(s.length - 1));
    },
    // random bytes
    () => randomString(1 + int(200)),
    // an unknown field in one of the closed objects
    () => {
      const req = valid();
      const o = pick(closedObjects(req));
      const name = pick(["extra", "__proto__", "constructor", "Pid", "PID", "args2", "exec", "cmd", "", "v "]) + (r() < 0.5 ? "" : String(int(99)));
      // defineProperty: a plain assignment of "__proto__" would set the prototype instead
      Object.defineProperty(o, name, { value: pick(wrongValues), enumerable: true, configurable: true, writable: true });
      return JSON.stringify(req);
    },
    // a literal __proto__ key (JSON.stringify cannot produce it from an object)
    () => {
      const s = JSON.stringify(valid());
      return s.replace('"target":{', `"target":{"__proto__":{"polluted":true},`);
    },
    // a wrong type or out-of-range value for a known field
    () => {
      const req = valid();
      const args = req.args as { [k: string]: Json };
      const target = args.target as { [k: string]: Json };
      const slot = int(7);
      const bad = pick(wrongValues);
      if (slot === 0) target.pid = typeof bad === "number" && Number.isInteger(bad) && bad >= 1 && bad <= 4194304 ? "1" : bad;
      else if (slot === 1) req.op = bad === "status" ? 1 : bad;
      else if (slot === 2) args.target = typeof bad === "object" && bad !== null && !Array.isArray(bad) ? [] : bad;
      else if (slot === 3) args.mappings = typeof bad === "object" && bad !== null && !Array.isArray(bad) ? { permissions: "r-x" } : bad;
      else if (slot === 4) req.args = typeof bad === "object" && bad !== null && !Array.isArray(bad) ? {} : bad;
      else if (slot === 5) target.match = typeof bad === "string" ? "some" : bad;
      else req.id = typeof bad === "string" ? 5 : bad;
      return JSON.stringify(req);
    },
    // wrong booleans / waitMs
    () => {
      const req = { v: 1, op: "lock", args: { target: { pid } }, waitMs: pick([-1, 1.5, "10", 1e9, null]) };
      if (r() < 0.5) return JSON.stringify({ v: 1, op: "lock", args: { target: { pid }, dryRun: pick(["true", 1, null, []]) } });
      return JSON.stringify(req);
    },
    // strings and arrays over their limits
    () => {
      const which = int(5);
      const over = (limit: number): string => "x".repeat(limit + 1 + int(2000));
      const target: { [k: string]: Json } =
        which === 0 ? { name: over(64) } : which === 1 ? { systemdUnit: over(256) } : which === 2 ? { cmdline: over(1024) } : { pidFile: "/" + over(4096) };
      if (which === 4) {
        return JSON.stringify({ v: 1, op: "status", args: { target: { pid }, mappings: { paths: Array.from({ length: 65 + int(100) }, () => "/x") } } });
      }
      return JSON.stringify({ v: 1, op: "status", args: { target } });
    },
    // bad selection values
    () =>
      JSON.stringify({
        v: 1,
        op: pick(["status", "lock", "unlock"]),
        args: { target: { pid }, mappings: pick([{ permissions: [pick(["rwz", "rwxpp", "", "RWX", "r-x\u0000"])] }, { kinds: [pick(["files", "", "ANON"])] }, { all: "yes" }, { paths: [""] }]) },
      }),
    // zero or two target selectors
    () => JSON.stringify({ v: 1, op: pick(["status", "lock"]), args: { target: pick([{}, { match: "all" }, { pid, name: "sleep" }, { pid, cmdline: "x", pidFile: "/p" }]) } }),
    // missing required fields
    () => JSON.stringify(pick([{ op: "status", args: { target: { pid } } }, { v: 1, args: { target: { pid } } }, { v: 1, op: "lock" }, { v: 1, op: "lock", args: {} }])),
    // another protocol version, or none that is a number
    () => JSON.stringify({ ...valid(), v: pick([0, 2, 3, -1, 1.5, 99, "1", null, true]) }),
    // unknown ops
    () => JSON.stringify({ ...valid(), op: pick(["Lock", "exec", "", "shell", "version ", "__proto__", "toString"]) }),
    // JSON that is not an object
    () => pick(["[]", "null", "1", '"lock"', "true", "[{\"v\":1,\"op\":\"version\"}]", "", " ", "{}"]),
    // oversized: a valid request padded past the size limit
    () => JSON.stringify(valid()) + " ".repeat(MAX_REQUEST_BYTES + int(1000)),
    // deep nesting
    () => JSON.stringify({ v: 1, op: "status", args: { target: { pid }, mappings: "[".repeat(1) } }).replace('"["', "[".repeat(2000 + int(5000)) + "]".repeat(1)),
    // two requests in one input
    () => JSON.stringify(valid()) + "\n" + JSON.stringify(valid()),
  ];
  const corpus: string[] = [];
  for (let i = 0; i < count; i++) corpus.push(mutations[i % mutations.length]());
  return corpus;
}

/** A core that fails the test if any operation reaches it. */
function forbiddenCore(calls: string[]): AgentCore {
  const no = (name: string) => async (): Promise<never> => {
    calls.push(name);
    throw new Error(`core.${name} was called for a malformed request`);
  };
  return { status: no("status"), plan: no("plan"), lock: no("lock"), unlock: no("unlock"), doctor: no("doctor"), resolveTarget: no("resolveTarget") };
}

function targetState(pid: number): { vmLck: string; state: string; startTime: string } {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return {
    vmLck: /VmLck:\s*(.*)/.exec(status)?.[1] ?? "?",
    state: /State:\s*(.*)/.exec(status)?.[1] ?? "?",
    startTime: fields[19],
  };
}

describe("malformed requests", () => {
  let target: ChildProcess;
  let pid: number;
  let bundle: AgentBundle;
  let corpus: string[];

  beforeAll(async () => {
    target = spawn("sleep", ["600"], { stdio: "ignore" });
    pid = target.pid!;
    bundle = await buildAgentBundle();
    corpus = generateCorpus(12_000, pid);
  });
  afterAll(() => {
    target.kill("SIGKILL");
    bundle.remove();
  });

  test("12,000 generated requests in-process: structured errors, exit 2, the core never reached", async () => {
    const before = targetState(pid);
    const calls: string[] = [];
    const core = forbiddenCore(calls);
    const codes = new Map<string, number>();
    for (let i = 0; i < corpus.length; i++) {
      const { reply, exitCode } = await handleRequest(corpus[i], { core, lockDir: "/nonexistent/never-created" });
      const ok = reply.ok === false && exitCode === 2 && (reply.error.code === "EUSAGE" || reply.error.code === "EPROTO");
      if (!ok) throw new Error(`case ${i} ${JSON.stringify(corpus[i].slice(0, 300))} -> ${JSON.stringify(reply)} exit ${exitCode}`);
      if (reply.ok === false) {
        expect(typeof reply.error.message).toBe("string");
        codes.set(reply.error.code, (codes.get(reply.error.code) ?? 0) + 1);
      }
      JSON.stringify(reply);
    }
    expect(calls).toEqual([]);
    expect(({} as { polluted?: boolean }).polluted).toBeUndefined();
    expect(targetState(pid)).toEqual(before);
    expect(fs.existsSync("/nonexistent/never-created")).toBe(false);
    expect(codes.get("EUSAGE")).toBeGreaterThan(9000);
    expect(codes.get("EPROTO")).toBeGreaterThan(100);
  });

  test("a sample of 150 through the real agent process: one JSON line, exit 2, target untouched", () => {
    const before = targetState(pid);
    const step = Math.floor(corpus.length / 150);
    for (let i = 0; i < corpus.length; i += step) {
      const run = spawnSync(bundle.wrapper, ["agent"], { input: corpus[i], encoding: "utf8", timeout: 20_000 });
      const lines = run.stdout.split("\n").filter((l) => l !== "");
      if (run.status !== 2 || lines.length !== 1 || run.stderr !== "") {
        throw new Error(`case ${i}: exit ${run.status}, stdout ${run.stdout.slice(0, 500)}, stderr ${run.stderr.slice(0, 500)}`);
      }
      const reply = JSON.parse(lines[0]) as { ok: boolean; error: { code: string } };
      expect(reply.ok).toBe(false);
      expect(["EUSAGE", "EPROTO"]).toContain(reply.error.code);
    }
    expect(targetState(pid)).toEqual(before);
  });
});

// ---------------------------------------------------------------- CLI flags and pid files

/** PID_MAX_LIMIT: a pid above it names no process, so the corpus can use such pids freely. */
const PID_MAX = 4194304;
/** No case may take longer (a FIFO pid file hung forever; a backtracking regex for 630 s). */
const CASE_LIMIT_MS = 2000;

interface CliCase {
  argv: string[];
  /** Written to the pid file the case names (pidFile) before it runs. */
  pidFileContent?: string | Buffer;
}

/**
 * CLI argument lists that mutate a valid invocation. Every lock/unlock carries --dry-run as
 * its first flag (where no option can swallow it), and no pid, name, pattern or pid file
 * content names a process other than the test's target: the corpus reads our target only.
 */
function generateCliCorpus(count: number, pid: number, marker: string, files: { pidFile: string; special: string[] }, seed = 1414): CliCase[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const int = (n: number): number => Math.floor(r() * n);
  const junk = (n: number): string =>
    Array.from({ length: n }, () => String.fromCharCode(pick([0x20, 0x2d, 0x2a, 0x5b, 0x5c, 0x28, 0x7b, 0x41, 0x30, 0xe9, 0x2028, 0xfeff]) + int(10))).join("");
  /** Any pid-looking value becomes our target's pid or one above PID_MAX. */
  const safePid = (): string =>
    pick([String(pid), String(pid), String(PID_MAX + 1 + int(1000)), "0", "-1", "1.5", "0x10", "", " ", `${pid} `, "99999999999999999999", "1e3", "x" + junk(1 + int(8))]);
  const patterns = [
    `${marker}(a+)+$`,
    `${marker}(a|aa)+!`,
    `^.*${marker}.*$`,
    `${marker}(a*)*b`,
    `${marker}(a)\\1`,
    `${marker}(?=a)`,
    `${marker}(?<!x)a`,
    `${marker}[`,
    `${marker}(`,
    `${marker}a{1001}`,
    `${marker}((a{1,100}){1,100}){1,100}`,
    marker + "a".repeat(1100),
    `${marker}\\`,
    `${marker}\\p{Greek}`,
    `(?i)${marker.toUpperCase()}`,
    marker + junk(20),
  ];
  const globs = ["*", "**", "/usr/lib/**/*.so*", "*a*a*a*a*a*a*a*b", "[", "[z-a]", "lib*", "usr/lib", "", "/" + "a".repeat(5000), "{a,b,c}*", "\\[heap\\]", "**/" + junk(10)];
  const pidFileContents = (): string | Buffer => {
    const content = pick<() => string | Buffer>([
      () => `${pid}\n`,
      () => `  ${pid}  \n\n`,
      () => `${pid}`,
      () => `${pid}\r\n`,
      () => `+${pid}`,
      () => `-${pid}`,
      () => `0${pid}`,
      () => `${pid}\n${pid + 1}\n`,
      () => `${pid}garbage`,
      () => `${PID_MAX + 1}`,
      () => "99999999999999999999999",
      () => "",
      () => "\n",
      () => "\u0000".repeat(int(100)),
      () => junk(1 + int(200)),
      () => "\u0661\u0662\u0663",
      () => "root:$6$s3cr3t$hash:19000:0:99999:7:::\n",
      () => `${pid}`.padEnd(100 + int(100_000), "7"),
      () => Buffer.from(Array.from({ length: 1 + int(300) }, () => int(256))),
    ])();
    return content;
  };
  // Flags come in groups (a flag and its value), so that shuffling never hands one flag's
  // value to another: a stray "--cmdline" that took "-p" as its pattern would match
  // processes the test did not start.
  const targetFlags = (): string[][] => {
    switch (int(7)) {
      case 0:
        return [["--pid", safePid()]];
      case 1:
        return [["--pidfile", files.pidFile]];
      case 2:
        return [["--pidfile", pick(files.special)]];
      case 3:
        return [["--name", pick([marker.slice(0, 15), "x".repeat(16 + int(50)), "", " ", "x" + junk(1 + int(14))])]];
      case 4:
        return [["--cmdline", pick(patterns)], ...(r() < 0.3 ? [["--all-matches"]] : [])];
      case 5:
        return [];
      default:
        // two target flags at once
        return [["--pid", String(pid)], ["--pidfile", files.pidFile]];
    }
  };
  const selectionFlags = (): string[][] => {
    const out: string[][] = [];
    if (r() < 0.3) out.push(["--perms", pick(["r-x,rwx", "rwz", "", "r-x,,", "RWX", junk(5), "r-xp,rw-s"])]);
    if (r() < 0.3) for (let i = int(r() < 0.1 ? 80 : 4); i > 0; i--) out.push(["--path", pick(globs)]);
    if (r() < 0.2) out.push(["--kind", pick(["file,anon", "heap", "files", "", "vdso,vvar,vsyscall", junk(6)])]);
    if (r() < 0.1) out.push(["--all"]);
    return out;
  };
  const optionFlags = (cmd: string): string[][] => {
    const out: string[][] = [];
    if (cmd === "lock" && r() < 0.2) out.push([pick(["--future", "--on-fault", "--raise-limit", "--allow-seccomp-suspend"])]);
    if ((cmd === "lock" || cmd === "unlock") && r() < 0.2) out.push(["--max-pause-ms", pick(["0", "0.05", "1", "60001", "NaN", "-5", "1e3", "", junk(4)])]);
    if (r() < 0.3) out.push(["--json"]);
    return out;
  };
  // Last, where a flag that lacks its value can take nothing from another flag.
  const noise = (): string[] => (r() < 0.85 ? [] : pick([["--bogus"], ["positional"], ["--pid"], ["--cmdline"], ["--", "extra"], ["--json=1"], ["x" + junk(1 + int(30))], ["-p"], ["--help"]]));

  const corpus: CliCase[] = [];
  for (let i = 0; i < count; i++) {
    const cmd = r() < 0.05 ? pick(["locks", "help", "Lock"]) : pick(["status", "lock", "unlock", "doctor"]);
    const head = cmd === "lock" || cmd === "unlock" ? [cmd, "--dry-run"] : [cmd];
    const groups = [...targetFlags(), ...selectionFlags(), ...optionFlags(cmd)];
    // Order must not matter; --dry-run stays right after the command.
    for (let j = groups.length - 1; j > 0; j--) {
      const k = int(j + 1);
      [groups[j], groups[k]] = [groups[k], groups[j]];
    }
    const argv = [...head, ...groups.flat(), ...noise()];
    corpus.push({ argv, pidFileContent: argv.includes(files.pidFile) ? pidFileContents() : undefined });
  }
  return corpus;
}

/** A pid file content whose first line is a pid of another process would read that process: never. */
function keepToTarget(content: string | Buffer, pid: number): string | Buffer {
  const first = content.toString("latin1").split("\n")[0].trim();
  if (/^[0-9]{1,7}$/.test(first) && Number(first) !== pid && Number(first) >= 1 && Number(first) <= PID_MAX) return `${pid}\n`;
  return content;
}

describe("CLI flags and pid files, in-process", () => {
  let target: Target;
  let dir: string;
  let files: { pidFile: string; special: string[] };
  const marker = `fuzzmark${process.pid}x`;

  beforeAll(async () => {
    // The tag puts a'..a! on the target's command line, where `(a+)+$` backtracks in a RegExp.
    target = await startTarget({ mode: "sleep", sleepMs: 50, tag: `${marker}${"a".repeat(48)}!` });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-fuzz-"));
    const fifo = path.join(dir, "fifo.pid");
    execFileSync("mkfifo", [fifo]);
    const shadow = path.join(dir, "shadow");
    fs.writeFileSync(shadow, "root:$6$s3cr3t$hash:19000:0:99999:7:::\n", { mode: 0o600 });
    const link = path.join(dir, "link.pid");
    fs.symlinkSync(shadow, link);
    files = { pidFile: path.join(dir, "fuzz.pid"), special: [fifo, "/dev/zero", "/dev/null", dir, link, path.join(dir, "missing.pid"), "", "relative.pid", "/proc/self/stat"] };
  });
  afterAll(async () => {
    fs.rmSync(dir, { recursive: true, force: true });
    await stopAllTargets();
  });

  test("10,000 generated invocations: each under 2 s, a usage error or a report, no crash, the target untouched", async () => {
    const corpus = generateCliCorpus(10_000, target.pid, marker, files);
    const before = targetState(target.pid);
    // Nothing in the corpus may reach ptrace or prlimit: these stand-ins count any attempt.
    const addon = native();
    const touched: string[] = [];
    const saved = { runBatch: addon.runBatch, recover: addon.recover, undoStop: addon.undoStop, setMemlockLimit: addon.setMemlockLimit };
    addon.runBatch = async () => {
      touched.push("runBatch");
      throw new Error("the fuzz corpus reached runBatch");
    };
    addon.recover = async () => {
      touched.push("recover");
      throw new Error("the fuzz corpus reached recover");
    };
    addon.undoStop = async () => {
      touched.push("undoStop");
      throw new Error("the fuzz corpus reached undoStop");
    };
    addon.setMemlockLimit = () => {
      touched.push("setMemlockLimit");
      throw new Error("the fuzz corpus reached setMemlockLimit");
    };
    const out = jest.spyOn(process.stdout, "write").mockImplementation(() => true);
    const err = jest.spyOn(process.stderr, "write").mockImplementation(() => true);
    const outcomes = new Map<string, number>();
    let slowest = 0;
    const unexpected: string[] = [];
    try {
      for (let i = 0; i < corpus.length; i++) {
        const c = corpus[i];
        if (c.pidFileContent !== undefined) fs.writeFileSync(files.pidFile, keepToTarget(c.pidFileContent, target.pid));
        process.exitCode = undefined;
        const started = Date.now();
        let timer: NodeJS.Timeout | undefined;
        const hang = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`case ${i} ${JSON.stringify(c.argv).slice(0, 300)} ran over ${CASE_LIMIT_MS} ms`)), CASE_LIMIT_MS);
        });
        let outcome: string;
        try {
          await Promise.race([buildProgram().parseAsync(c.argv, { from: "user" }), hang]);
          outcome = process.exitCode === 1 ? "failed" : "ok";
        } catch (e) {
          if (e instanceof Error && e.message.endsWith(`ran over ${CASE_LIMIT_MS} ms`)) throw e;
          if (e instanceof CommanderError) outcome = "usage";
          else if (e instanceof LockError && e.code !== "EINTERNAL") outcome = e.code;
          else throw new Error(`case ${i} ${JSON.stringify(c.argv).slice(0, 300)} crashed: ${e instanceof Error ? e.stack : String(e)}`);
          // A pid file's content never appears in a message.
          if (e instanceof LockError) expect(e.message).not.toContain("s3cr3t");
        } finally {
          clearTimeout(timer);
        }
        slowest = Math.max(slowest, Date.now() - started);
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        if (outcome === "EAMBIGUOUS" || outcome === "EPERM") unexpected.push(`case ${i}: ${outcome} ${JSON.stringify(c.argv).slice(0, 300)}`);
      }
    } finally {
      out.mockRestore();
      err.mockRestore();
      process.exitCode = undefined;
      addon.runBatch = saved.runBatch;
      addon.recover = saved.recover;
      addon.undoStop = saved.undoStop;
      addon.setMemlockLimit = saved.setMemlockLimit;
    }
    // eslint-disable-next-line no-console
    console.log(`CLI fuzz: ${JSON.stringify(Object.fromEntries(outcomes))}, slowest case ${slowest} ms`);
    expect(touched).toEqual([]);
    expect(targetState(target.pid)).toEqual(before);
    expect(target.isAlive()).toBe(true);
    expect(slowest).toBeLessThan(CASE_LIMIT_MS);
    // The corpus reaches every kind of answer, not only usage errors.
    expect(outcomes.get("ok")).toBeGreaterThan(300);
    expect(outcomes.get("EUSAGE")).toBeGreaterThan(3000);
    expect(outcomes.get("ENOTARGET")).toBeGreaterThan(500);
    expect(outcomes.get("usage")).toBeGreaterThan(500);
    // Only our target was ever found: never several processes, never one we may not read.
    expect(unexpected).toEqual([]);
  }, 600_000);
});
