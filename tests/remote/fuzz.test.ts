// A corpus of generated malformed requests: the agent answers every one with a structured
// EUSAGE/EPROTO error and exit status 2, never throws, never reaches the host library and
// never changes the target named in the request.
import { spawn, spawnSync, ChildProcess } from "child_process";
import * as fs from "fs";
import { AgentCore, handleRequest } from "../../src/agent/server";
import { MAX_REQUEST_BYTES } from "../../src/agent/protocol";
import { AgentBundle, buildAgentBundle } from "../support/agent-bundle";

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

  beforeAll(() => {
    target = spawn("sleep", ["600"], { stdio: "ignore" });
    pid = target.pid!;
    bundle = buildAgentBundle();
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
