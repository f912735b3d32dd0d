// The agent compiles its request schemas without checking them against the JSON Schema
// meta-schema (that costs start-up time on every host): check them here instead.
import Ajv from "ajv";
import { AGENT_OPS, REQUEST_SCHEMAS, parseRequest } from "../../src/agent/protocol";

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
