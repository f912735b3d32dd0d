// The `lockmem agent` wire protocol: one JSON request on stdin, one JSON reply line on
// stdout. Requests are checked against a strict JSON schema (ajv) before anything runs,
// so a malformed request changes nothing on the host.
import type { ErrorObject, ValidateFunction } from "ajv";
import { LockErrorCode, LockErrorInit } from "../errors";
import { MAX_PATH_GLOBS, MAX_PATH_LENGTH } from "../inputBounds";
import { SELECTOR_LIST, selectorsGiven, targetSpecSchema } from "../target-selectors";
import { LockRequest, StatusRequest, UnlockRequest } from "../api";
import { MAPPING_KINDS, TargetSpec } from "../types";
import { requestValidator } from "./request-validators";

/** Bumped on any incompatible change of request or reply shapes. */
export const PROTOCOL_VERSION = 1;

/** Largest request the agent reads; the biggest legitimate request is a few KiB. */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** The longest agent.lingerSeconds: how long a resident agent (resident.ts) may stay idle. */
export const MAX_LINGER_SECONDS = 3600;
/** The resident agent's socket, in its bundle folder. */
export const SOCKET_NAME = "agent.sock";
/** The longest socket path a unix socket takes (sun_path holds 108 bytes, its NUL included). */
export const MAX_SOCKET_PATH_BYTES = 107;
/** What the provider's presumed command prints, with the socket's path, instead of starting Node when a resident agent is there. */
export const RESIDENT_LINE = "lockmem-resident";

/** How long a changing op waits for another agent working on the same target, by default. */
export const DEFAULT_WAIT_MS = 30_000;
export const MAX_WAIT_MS = 600_000;

export const AGENT_OPS = ["version", "status", "plan", "lock", "unlock", "doctor"] as const;
export type AgentOp = (typeof AGENT_OPS)[number];

interface RequestBase {
  v: number;
  /** Caller's correlation id, echoed in the reply. */
  id?: string;
}

export interface VersionAgentRequest extends RequestBase {
  op: "version";
}
export interface StatusAgentRequest extends RequestBase {
  op: "status";
  args: StatusRequest;
}
export interface DoctorAgentRequest extends RequestBase {
  op: "doctor";
  args: StatusRequest;
}
export interface PlanAgentRequest extends RequestBase {
  op: "plan";
  args: LockRequest;
}
export interface LockAgentRequest extends RequestBase {
  op: "lock";
  args: LockRequest;
  /** How long to wait for another agent that works on the same target (default 30 s). */
  waitMs?: number;
}
export interface UnlockAgentRequest extends RequestBase {
  op: "unlock";
  args: UnlockRequest;
  waitMs?: number;
}

export type AgentRequest =
  | VersionAgentRequest
  | StatusAgentRequest
  | DoctorAgentRequest
  | PlanAgentRequest
  | LockAgentRequest
  | UnlockAgentRequest;

/** What `version` answers. */
export interface VersionResult {
  protocol: number;
  /** The lockmem package version of the agent. */
  agent: string;
  node: string;
  arch: string;
  /** Effective uid of the agent: 0 when it runs as root (directly or through sudo). */
  uid: number;
}

export interface AgentErrorBody extends LockErrorInit {
  code: LockErrorCode;
  message: string;
  hint?: string;
  field?: string;
}

export interface AgentOkReply {
  v: number;
  ok: true;
  id?: string;
  result: unknown;
}
export interface AgentErrorReply {
  v: number;
  ok: false;
  id?: string;
  error: AgentErrorBody;
}
export type AgentReply = AgentOkReply | AgentErrorReply;

// ---- schemas ------------------------------------------------------------------------

const PATH_STRING = { type: "string", minLength: 1, maxLength: MAX_PATH_LENGTH, pattern: "^[^\\u0000]+$" } as const;

const targetSchema = targetSpecSchema();


const selectionSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    permissions: {
      type: "array",
      maxItems: 16,
      items: { type: "string", pattern: "^[r-][w-][x-][ps]?$" },
    },
    paths: { type: "array", maxItems: MAX_PATH_GLOBS, items: PATH_STRING },
    kinds: { type: "array", maxItems: MAPPING_KINDS.length, items: { enum: MAPPING_KINDS } },
    all: { type: "boolean" },
    allAccessible: { type: "boolean" },
  },
} as const;

/** What lock and unlock both take. */
const changeArgsProperties = {
  target: targetSchema,
  mappings: selectionSchema,
  future: { type: "boolean" },
  allowSeccompSuspend: { type: "boolean" },
  maxPauseMs: { type: "number", minimum: 0.1, maximum: 60000 },
  dryRun: { type: "boolean" },
} as const;

const lockArgsSchema = {
  type: "object",
  additionalProperties: false,
  required: ["target"],
  properties: { ...changeArgsProperties, onFault: { type: "boolean" }, raiseMemlockLimit: { type: "boolean" } },
} as const;

const unlockArgsSchema = {
  type: "object",
  additionalProperties: false,
  required: ["target"],
  properties: changeArgsProperties,
} as const;

const statusArgsSchema = {
  type: "object",
  additionalProperties: false,
  required: ["target"],
  properties: { target: targetSchema, mappings: selectionSchema },
} as const;

const V = { type: "integer" } as const;
const ID = { type: "string", maxLength: 128 } as const;
const WAIT = { type: "integer", minimum: 0, maximum: MAX_WAIT_MS } as const;

function requestSchema(op: AgentOp, args: object | undefined, waits: boolean): object {
  const properties: Record<string, object> = { v: V, op: { const: op }, id: ID };
  const required = ["v", "op"];
  if (args) {
    properties.args = args;
    required.push("args");
  }
  if (waits) properties.waitMs = WAIT;
  return { type: "object", additionalProperties: false, required, properties };
}

export const REQUEST_SCHEMAS: Record<AgentOp, object> = {
  version: requestSchema("version", undefined, false),
  status: requestSchema("status", statusArgsSchema, false),
  doctor: requestSchema("doctor", statusArgsSchema, false),
  plan: requestSchema("plan", lockArgsSchema, false),
  lock: requestSchema("lock", lockArgsSchema, true),
  unlock: requestSchema("unlock", unlockArgsSchema, true),
};

/** Only the schema of the op at hand is compiled (request-validators.ts). */
function validatorFor(op: AgentOp): ValidateFunction<AgentRequest> {
  return requestValidator(op, REQUEST_SCHEMAS[op]) as ValidateFunction<AgentRequest>;
}

/** A rejected request: the reply error, ready to send. */
export class RequestError extends Error {
  constructor(readonly body: AgentErrorBody) {
    super(body.message);
    this.name = "RequestError";
  }
}

function usage(field: string, message: string, hint?: string): RequestError {
  const where = field === "" ? "request" : field;
  return new RequestError({ code: "EUSAGE", field: field || undefined, message: `${where}: ${message}`, hint });
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** "/args/target/pid" -> "target.pid": fields are named as in the core request types. */
function fieldOf(instancePath: string): string {
  const parts = instancePath.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (parts[0] === "args") parts.shift();
  return parts.map((p, i) => (/^\d+$/.test(p) ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

function describe(err: ErrorObject): RequestError {
  const field = fieldOf(err.instancePath);
  const p = err.params as Record<string, unknown>;
  switch (err.keyword) {
    case "additionalProperties": {
      const name = String(p.additionalProperty);
      const props = isPlainObject(err.parentSchema) && isPlainObject(err.parentSchema.properties)
        ? Object.keys(err.parentSchema.properties)
        : [];
      const at = field ? `${field}.${name}` : name;
      return usage(at, "unknown field", props.length ? `allowed here: ${props.join(", ")}` : undefined);
    }
    case "required":
      return usage(field ? `${field}.${String(p.missingProperty)}` : String(p.missingProperty), "is required");
    case "type":
      return usage(field, `must be ${String(p.type)}`);
    case "enum":
    case "const": {
      const allowed = (p.allowedValues as unknown[] | undefined) ?? [p.allowedValue];
      return usage(field, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`);
    }
    case "minProperties":
      return usage(field, "must not be empty", `give one of ${SELECTOR_LIST}`);
    case "maxLength":
    case "minLength":
    case "maxItems":
    case "minimum":
    case "maximum":
    case "pattern":
      return usage(field, err.message ?? "is invalid");
    default:
      return usage(field, err.message ?? "is invalid");
  }
}

/**
 * Checks a raw request text and returns the typed request, or throws RequestError
 * (EUSAGE for bad input, EPROTO for another protocol version). Never runs anything.
 */
export function parseRequest(raw: string): AgentRequest {
  const bytes = Buffer.byteLength(raw, "utf8");
  if (bytes > MAX_REQUEST_BYTES) {
    throw usage("", `is ${bytes} bytes, the limit is ${MAX_REQUEST_BYTES}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw usage("", `is not valid JSON (${e instanceof Error ? e.message : String(e)})`, "send one JSON object on stdin");
  }
  if (!isPlainObject(parsed)) throw usage("", "must be a JSON object");
  if (typeof parsed.v === "number" && parsed.v !== PROTOCOL_VERSION) {
    throw new RequestError(protocolMismatch(parsed.v, PROTOCOL_VERSION, "agent"));
  }
  if (!("v" in parsed)) throw usage("v", "is required", `send "v": ${PROTOCOL_VERSION}`);
  const op = parsed.op;
  if (typeof op !== "string" || !(AGENT_OPS as readonly string[]).includes(op)) {
    throw usage("op", `must be one of ${AGENT_OPS.join(", ")}`);
  }
  const validate = validatorFor(op as AgentOp);
  if (!validate(parsed)) {
    const errors = validate.errors ?? [];
    throw errors.length ? describe(errors[0]) : usage("", "is invalid");
  }
  if (parsed.op !== "version") {
    const target: TargetSpec = parsed.args.target;
    const given = selectorsGiven(target);
    if (given.length !== 1) {
      throw usage(
        "target",
        given.length === 0 ? "names no process" : `gives ${given.join(" and ")}`,
        `give exactly one of ${SELECTOR_LIST}`,
      );
    }
  }
  return parsed;
}

/**
 * The error for two sides speaking different protocol versions. `side` is who detected
 * it: the agent (request too new/old) or the client (agent reply too new/old).
 */
export function protocolMismatch(theirs: number, ours: number, side: "agent" | "client", host?: string): AgentErrorBody {
  const agentV = side === "agent" ? ours : theirs;
  const clientV = side === "agent" ? theirs : ours;
  const where = host ? ` on ${host}` : "";
  const older = agentV < clientV ? "agent" : "client";
  return {
    code: "EPROTO",
    message: `lockmem protocol mismatch: the agent${where} speaks protocol v${agentV}, the caller speaks v${clientV}`,
    hint:
      older === "agent"
        ? `upgrade lockmem on the host${where} (npm install -g pulumi-lockmem@latest, or agent.install: "auto") so that it speaks v${clientV}`
        : `upgrade the caller (pulumi-lockmem in your Pulumi program or the lockmem CLI) so that it speaks v${agentV}, or install an older lockmem on the host`,
  };
}

export function okReply(result: unknown, id?: string): AgentOkReply {
  return id === undefined ? { v: PROTOCOL_VERSION, ok: true, result } : { v: PROTOCOL_VERSION, ok: true, id, result };
}

export function errorReply(error: AgentErrorBody, id?: string): AgentErrorReply {
  return id === undefined ? { v: PROTOCOL_VERSION, ok: false, error } : { v: PROTOCOL_VERSION, ok: false, id, error };
}
