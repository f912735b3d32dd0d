// Request validators by op, compiled by ajv from the request schemas on first use.
//
// The agent bundle that hosts run replaces this module (provider/agent/bundle.ts) with the
// same validators generated ahead of time by ajv's standalone code, from the same schemas
// and these options: an agent on a host then neither loads ajv's compiler nor compiles a
// schema when it starts (about a third of its start-up CPU otherwise). The two agree:
// tests/unit/protocol.test.ts runs both over valid and invalid requests.
import type Ajv from "ajv";
import type { Options, ValidateFunction } from "ajv";

/**
 * The schemas are constants (protocol.ts), checked against the JSON Schema meta-schema by
 * tests/unit/protocol.test.ts: the agent does not compile the meta-schema (validateSchema:
 * false), nor run ajv's optimiser pass, which costs more than it saves for a few requests.
 */
export const AJV_OPTIONS: Options = { strict: true, allErrors: false, verbose: true, validateSchema: false, code: { optimize: false } };

let ajv: Ajv | undefined;
const compiled = new Map<string, ValidateFunction>();

export function requestValidator(op: string, schema: object): ValidateFunction {
  let v = compiled.get(op);
  if (!v) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    ajv ??= new (require("ajv").default as typeof Ajv)(AJV_OPTIONS);
    v = ajv.compile(schema);
    compiled.set(op, v);
  }
  return v;
}
