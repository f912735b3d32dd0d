// `check`: validates the inputs without touching any host, one failure per property, so
// that `pulumi preview` lists every mistake at once. Uses the same validators as the agent.
import { TargetSpec, SelectionSpec } from "../../src/types";
import { validateTargetSpec } from "../../src/target";
import { SELECTOR_LIST } from "../../src/target-selectors";
import { validateSelection } from "../../src/select";
import { transportFor } from "../transport";
import { SshConnection } from "../transport/ssh/settings";
import { AgentSettings, OperationTimeouts, ProviderInputs } from "./state";
import { MAX_LINGER_SECONDS } from "../../src/agent/protocol";

export interface CheckFailure {
  property: string;
  reason: string;
}

/** How the engine marks a value not known until apply (preview of a value computed from another resource). */
const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

function hasUnknown(value: unknown): boolean {
  if (value === UNKNOWN) return true;
  if (Array.isArray(value)) return value.some(hasUnknown);
  if (typeof value === "object" && value !== null) return Object.values(value).some(hasUnknown);
  return false;
}

const BOOLEAN_INPUTS = ["future", "onFault", "raiseMemlockLimit"] as const;
const SAFE_PATH = /^[A-Za-z0-9_./+~-]+$/;

function checkAgent(agent: unknown): string | undefined {
  if (typeof agent !== "object" || agent === null || Array.isArray(agent)) return "must be an object { install, path, dir, lingerSeconds }";
  const a = agent as Record<string, unknown>;
  const unknownKey = Object.keys(a).find((k) => !["install", "path", "dir", "lingerSeconds"].includes(k));
  if (unknownKey) return `agent.${unknownKey}: unknown field; expected install, path, dir or lingerSeconds`;
  const linger = a.lingerSeconds;
  if (linger !== undefined && linger !== UNKNOWN && (typeof linger !== "number" || !Number.isInteger(linger) || linger < 0 || linger > MAX_LINGER_SECONDS)) {
    return `agent.lingerSeconds: must be a whole number of seconds from 0 to ${MAX_LINGER_SECONDS}, got ${JSON.stringify(linger)}`;
  }
  if (typeof linger === "number" && linger > 0 && a.install === "never") return 'agent.lingerSeconds: only used with install: "auto" (the deployed agent)';
  if (a.install !== undefined && a.install !== "auto" && a.install !== "never") return `agent.install: must be "auto" or "never", got ${JSON.stringify(a.install)}`;
  for (const key of ["path", "dir"] as const) {
    const v = a[key];
    if (v === undefined) continue;
    if (typeof v !== "string" || !SAFE_PATH.test(v) || v.startsWith("-")) {
      return `agent.${key}: must be a plain path of letters, digits and _ . / + ~ -, got ${JSON.stringify(v)}`;
    }
  }
  // The agent command runs as is (no shell expands "~" locally; the SSH transport refuses it).
  if (typeof a.path === "string" && a.path.includes("~")) {
    return `agent.path: "~" is not expanded here, got ${JSON.stringify(a.path)}; give the absolute path (e.g. /usr/local/bin/lockmem) or a command name on the PATH`;
  }
  if (a.path !== undefined && a.install !== "never") return 'agent.path: only used with install: "never" (install "auto" runs the agent it deploys)';
  if (a.dir !== undefined && a.install === "never") return 'agent.dir: only used with install: "auto"';
  if (typeof a.dir === "string" && !a.dir.startsWith("/") && !a.dir.startsWith("~/")) return "agent.dir: must be absolute or start with ~/";
  return undefined;
}

function withHint(message: string, hint?: string): string {
  return hint ? `${message} (${hint})` : message;
}

/** The failures of `news`, one per property; empty when the inputs are good. */
export function checkInputs(news: Record<string, unknown>): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const fail = (property: string, reason: string | undefined): void => {
    if (reason) failures.push({ property, reason });
  };

  const target = news.target;
  if (target === undefined) fail("target", `target: required: give exactly one of ${SELECTOR_LIST}`);
  else if (!hasUnknown(target)) {
    const problem = validateTargetSpec(target as TargetSpec);
    fail("target", problem && withHint(problem.message, problem.hint));
  }

  if (news.mappings !== undefined && !hasUnknown(news.mappings)) {
    const problem = validateSelection(news.mappings as SelectionSpec);
    fail("mappings", problem && withHint(problem.message, problem.hint));
  }

  for (const key of BOOLEAN_INPUTS) {
    const v = news[key];
    if (v !== undefined && v !== UNKNOWN && typeof v !== "boolean") fail(key, `${key}: must be true or false, got ${JSON.stringify(v)}`);
  }

  if (news.connection !== undefined && !hasUnknown(news.connection)) fail("connection", transportFor(news.connection as SshConnection).check());
  if (news.agent !== undefined && !hasUnknown(news.agent)) fail("agent", checkAgent(news.agent));
  if (news.agent !== undefined && news.connection === undefined && (news.agent as AgentSettings).dir !== undefined) {
    fail("agent", "agent.dir: only used for remote hosts (with a connection)");
  }
  const linger = (news.agent as AgentSettings | undefined)?.lingerSeconds;
  if (typeof linger === "number" && linger > 0) {
    const conn = news.connection as SshConnection | undefined;
    if (conn === undefined) fail("agent", "agent.lingerSeconds: only used for remote hosts (with a connection)");
    // A resident root agent would give every process of the SSH user a way to it.
    else if ((conn as unknown) !== UNKNOWN && conn.sudo === true) fail("agent", "agent.lingerSeconds: not with connection.sudo: log in as the user the agent runs as (root), or set lingerSeconds to 0");
  }

  const timeouts = news.timeouts as OperationTimeouts | undefined;
  if (timeouts !== undefined) {
    for (const [k, v] of Object.entries(timeouts)) {
      if (v !== undefined && (typeof v !== "number" || !(v > 0))) fail("timeouts", `customTimeouts.${k}: must be a positive duration`);
    }
  }

  const known = new Set<string>(["connection", "agent", "target", "mappings", "future", "onFault", "raiseMemlockLimit", "timeouts"]);
  for (const key of Object.keys(news)) {
    if (!known.has(key) && !key.startsWith("__") && !OUTPUT_KEYS.has(key)) fail(key, `${key}: unknown input`);
  }
  return failures;
}

/** Output properties the resource declares (as undefined inputs) so that they show as outputs. */
export const OUTPUT_KEYS = new Set<string>(["host", "processes", "lockedBytes", "inSync", "drift", "warnings"]);

/** The inputs as stored: output placeholders dropped, defaults left implicit. */
export function normalizeInputs(news: Record<string, unknown>): ProviderInputs {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(news)) {
    if (OUTPUT_KEYS.has(k) || v === undefined) continue;
    out[k] = v;
  }
  return out as unknown as ProviderInputs;
}
