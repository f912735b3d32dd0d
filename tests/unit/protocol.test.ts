// The agent compiles its request schemas without checking them against the JSON Schema
// meta-schema (that costs start-up time on every host): check them here instead, and check
// that the validators the agent bundle carries precompiled agree with compiled ones.
import Ajv, { ValidateFunction } from "ajv";
import Module from "module";
import * as path from "path";
import { precompiledValidatorsSource } from "../../provider/agent/bundle";
import { AGENT_OPS, REQUEST_SCHEMAS, parseRequest } from "../../src/agent/protocol";
import { AJV_OPTIONS } from "../../src/agent/request-validators";

test.each(AGENT_OPS)("the %s request schema is a valid, strict JSON schema", (op) => {
  const ajv = new Ajv({ strict: true });
  expect(ajv.validateSchema(REQUEST_SCHEMAS[op])).toBe(true);
  expect(ajv.errors ?? null).toBeNull();
  expect(() => ajv.compile(REQUEST_SCHEMAS[op])).not.toThrow();
});

test("requests are still checked strictly", () => {
  expect(parseRequest(JSON.stringify({ v: 1, op: "lock", args: { target: { pid: 1 }, mappings: { all: true } } })).op).toBe("lock");
  expect(() => parseRequest(JSON.stringify({ v: 1, op: "lock", args: { target: { pid: 1 }, extra: 1 } }))).toThrow(/unknown field/);
  expect(() => parseRequest(JSON.stringify({ v: 1, op: "lock", args: { target: { pid: "1" } } }))).toThrow();
});

describe("the agent bundle's precompiled validators", () => {
  // Loaded as the bundle would: the generated source as a module next to the real one.
  const filename = path.join(__dirname, "..", "..", "src", "agent", "request-validators.precompiled.js");
  const m = new Module(filename);
  m.filename = filename;
  m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(filename));
  (m as unknown as { _compile(code: string, filename: string): void })._compile(precompiledValidatorsSource(), filename);
  const precompiled = m.exports.requestValidator as (op: string) => ValidateFunction | undefined;

  const target = { pid: 42 };
  const requests: unknown[] = [
    { v: 1, op: "version" },
    { v: 1, op: "version", id: "x".repeat(129) },
    { v: 1, op: "version", extra: true },
    { v: 1, op: "lock", args: { target, mappings: { all: true }, future: true }, waitMs: 1000 },
    { v: 1, op: "lock", args: { target: { pid: 0 } } },
    { v: 1, op: "lock", args: { target: {} } },
    { v: 1, op: "lock", args: { target, mappings: { permissions: ["r-x", "rw-p"], paths: ["/usr/lib/*"], kinds: ["file", "heap"] } } },
    { v: 1, op: "lock", args: { target, mappings: { permissions: ["rwz"] } } },
    { v: 1, op: "lock", args: { target, mappings: { kinds: ["nope"] } } },
    { v: 1, op: "lock", args: { target, maxPauseMs: 0 } },
    { v: 1, op: "lock", args: { target }, waitMs: -1 },
    { v: 1, op: "lock", args: { target: { systemdUnit: "a b" } } },
    { v: 1, op: "lock", args: { target: { name: "a/b" } } },
    { v: 1, op: "lock", args: { target: { pidFile: "/run/x\u0000" } } },
    { v: 1, op: "lock" },
    { v: 1, op: "unlock", args: { target, future: true, onFault: true } },
    { v: 1, op: "unlock", args: { target: { cmdline: "^postgres", match: "all" }, dryRun: true } },
    { v: 1, op: "status", args: { target, mappings: { all: "yes" } } },
    { v: 1, op: "status", args: { target, waitMs: 5 } },
    { v: 1, op: "doctor", args: { target: { name: "pg" } } },
    { v: 1, op: "plan", args: { target, raiseMemlockLimit: true, allowSeccompSuspend: false } },
    { v: "1", op: "plan", args: { target } },
  ];

  test.each(AGENT_OPS)("give the same verdict and first error as ajv's compiled %s validator", (op) => {
    const pre = precompiled(op)!;
    const compiled = new Ajv({ ...AJV_OPTIONS }).compile(REQUEST_SCHEMAS[op]);
    expect(typeof pre).toBe("function");
    for (const r of requests) {
      const request = { ...(r as object), op };
      const ok = compiled(request);
      expect([JSON.stringify(request), pre(request)]).toEqual([JSON.stringify(request), ok]);
      if (!ok) {
        const [a, b] = [pre.errors![0], compiled.errors![0]];
        expect({ ...a, schema: undefined, parentSchema: undefined }).toEqual({ ...b, schema: undefined, parentSchema: undefined });
        expect(a.parentSchema).toEqual(b.parentSchema);
      }
    }
  });
});
