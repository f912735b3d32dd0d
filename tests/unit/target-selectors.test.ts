// The one table of target selectors (src/target-selectors.ts): every consumer takes each row.
import { parseRequest } from "../../src/agent/protocol";
import { validateTargetSpec } from "../../src/target";
import { describeTargetSpec, SELECTOR_FLAG_LIST, SELECTOR_LIST, TARGET_SELECTORS } from "../../src/target-selectors";
import { TargetSpec } from "../../src/types";

const SAMPLE: Record<string, unknown> = { pid: 42, pidFile: "/run/x.pid", systemdUnit: "redis.service", name: "redis-server", cmdline: "^redis" };

test.each(TARGET_SELECTORS.map((s) => [s.key]))("selector %s: the agent protocol, the validator and the messages all know it", (key) => {
  const spec = { [key]: SAMPLE[key] } as TargetSpec;
  expect(validateTargetSpec(spec)).toBeUndefined();
  expect(parseRequest(JSON.stringify({ v: 1, op: "status", args: { target: spec } })).op).toBe("status");
  expect(describeTargetSpec(spec)).toContain(String(SAMPLE[key]));
  expect(SELECTOR_LIST).toContain(key);
});

test("two selectors at once are refused by the validator and by the protocol, naming both", () => {
  const spec = { pid: 1, name: "x" } as TargetSpec;
  expect(validateTargetSpec(spec)?.message).toMatch(/got pid and name/);
  expect(() => parseRequest(JSON.stringify({ v: 1, op: "status", args: { target: spec } }))).toThrow(/pid and name/);
});

test("the CLI's flags come from the table", () => {
  expect(SELECTOR_FLAG_LIST).toBe("--pid, --pidfile, --unit, --name, --cmdline");
});
