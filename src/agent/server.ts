// `lockmem agent`: reads one request on stdin, runs it through the host library, writes
// one reply line on stdout. Everything a caller can send is checked (protocol.ts) before
// the core is even loaded, so bad input never reaches ptrace.
import { LockError } from "../errors";
import { LockRequest, StatusRequest, UnlockRequest } from "../api";
import { ProcessRef, TargetSpec } from "../types";
import {
  AgentErrorBody,
  AgentReply,
  AgentRequest,
  DEFAULT_WAIT_MS,
  MAX_REQUEST_BYTES,
  PROTOCOL_VERSION,
  RequestError,
  VersionResult,
  errorReply,
  okReply,
  parseRequest,
} from "./protocol";
import { withTargetLocks } from "./target-lock";

/** Exit status of the agent process. */
export const EXIT_OK = 0;
/** The core refused or failed (the reply says why). */
export const EXIT_FAILED = 1;
/** The request itself was bad (EUSAGE) or spoke another protocol (EPROTO): nothing ran. */
export const EXIT_BAD_REQUEST = 2;

/** What the agent needs from the host library; tests may pass their own. */
export interface AgentCore {
  status(req: StatusRequest): Promise<unknown>;
  plan(req: LockRequest): Promise<unknown>;
  lock(req: LockRequest): Promise<unknown>;
  unlock(req: UnlockRequest): Promise<unknown>;
  doctor(req: StatusRequest): Promise<unknown>;
  resolveTarget(spec: TargetSpec): Promise<ProcessRef[]>;
}

/** Loads the host library on first use: `version` and rejected requests never load the addon. */
function loadCore(): AgentCore {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const api = require("../api") as typeof import("../api");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const target = require("../target") as typeof import("../target");
  return {
    status: (r) => api.status(r),
    plan: (r) => api.plan(r),
    lock: (r) => api.lock(r),
    unlock: (r) => api.unlock(r),
    doctor: (r) => api.doctor(r),
    resolveTarget: (s) => target.resolveTarget(s),
  };
}

export interface HandleOptions {
  core?: AgentCore;
  /** Directory of the per-target lock files (default /run/lockmem). */
  lockDir?: string;
}

/** The version of this package (the agent reports it; `lockmem --version` prints it). */
export function agentVersion(): string {
  // From src/agent (ts-jest, and the esbuild bundle, which inlines it) the package root is
  // two levels up; compiled into dist/src/agent it is three.
  // The second path is computed so that bundlers leave it alone.
  const compiled = [__dirname, "..", "..", "..", "package.json"].join("/");
  for (const load of [() => require("../../package.json"), () => require(compiled)]) {
    try {
      const pkg = load() as { name?: string; version?: string };
      if (pkg.name === "pulumi-lockmem" && pkg.version) return pkg.version;
    } catch {
      // try the next location
    }
  }
  return "unknown";
}

function toErrorBody(e: unknown): AgentErrorBody {
  if (e instanceof RequestError) return e.body;
  if (e instanceof LockError) {
    const body = e.toJSON();
    // Drop absent fields so the reply stays small and stable.
    return JSON.parse(JSON.stringify(body)) as AgentErrorBody;
  }
  const message = e instanceof Error ? e.message : String(e);
  return {
    code: "EINTERNAL",
    message: `lockmem agent internal error: ${message}`,
    hint: "this is a bug in lockmem; please report it with the request that caused it",
  };
}

function exitCodeFor(body: AgentErrorBody): number {
  return body.code === "EUSAGE" || body.code === "EPROTO" ? EXIT_BAD_REQUEST : EXIT_FAILED;
}

/**
 * Runs `fn` holding the lock of every process the target resolves to. The target is resolved
 * again once the locks are held: a target that restarted in between is locked under its new pid.
 */
async function serialised<T>(
  core: AgentCore,
  target: TargetSpec,
  op: string,
  waitMs: number,
  lockDir: string | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + waitMs;
  for (let attempt = 0; ; attempt++) {
    const before = (await core.resolveTarget(target)).map((p) => p.pid);
    const done = await withTargetLocks(before, { op, waitMs: Math.max(0, deadline - Date.now()), dir: lockDir }, async () => {
      const after = (await core.resolveTarget(target)).map((p) => p.pid);
      if (after.every((pid) => before.includes(pid)) || attempt >= 2) return { value: await fn() };
      return undefined;
    });
    if (done) return done.value;
  }
}

async function dispatch(req: AgentRequest, opts: HandleOptions): Promise<unknown> {
  if (req.op === "version") {
    const result: VersionResult = {
      protocol: PROTOCOL_VERSION,
      agent: agentVersion(),
      node: process.version,
      arch: process.arch,
      uid: process.getuid?.() ?? -1,
    };
    return result;
  }
  const core = opts.core ?? loadCore();
  switch (req.op) {
    case "status":
      return core.status(req.args);
    case "doctor":
      return core.doctor(req.args);
    case "plan":
      return core.plan({ ...req.args, dryRun: true });
    case "lock": {
      const args = req.args;
      if (args.dryRun) return core.lock(args);
      return serialised(core, args.target, "lock", req.waitMs ?? DEFAULT_WAIT_MS, opts.lockDir, () => core.lock(args));
    }
    case "unlock": {
      const args = req.args;
      if (args.dryRun) return core.unlock(args);
      return serialised(core, args.target, "unlock", req.waitMs ?? DEFAULT_WAIT_MS, opts.lockDir, () =>
        core.unlock(args),
      );
    }
  }
}

/**
 * Answers one raw request. Never throws: every failure becomes an error reply, with exit
 * status 2 for a bad request (nothing ran) and 1 for a failed operation.
 */
export async function handleRequest(
  raw: string,
  opts: HandleOptions = {},
): Promise<{ reply: AgentReply; exitCode: number }> {
  let id: string | undefined;
  try {
    const req = parseRequest(raw);
    id = req.id;
    const result = await dispatch(req, opts);
    return { reply: okReply(result, id), exitCode: EXIT_OK };
  } catch (e) {
    const body = toErrorBody(e);
    return { reply: errorReply(body, id), exitCode: exitCodeFor(body) };
  }
}

/** Reads stdin up to the size limit (plus one byte, so that "too big" is detectable). */
function readStdin(limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stdin = process.stdin;
    const done = (): void => {
      stdin.removeAllListeners("data");
      stdin.pause();
      resolve(Buffer.concat(chunks).toString("utf8"));
    };
    stdin.on("data", (chunk: Buffer) => {
      if (size > limit) return;
      chunks.push(chunk);
      size += chunk.length;
      if (size > limit) done();
    });
    stdin.on("end", done);
    stdin.on("error", reject);
  });
}

/** The body of `lockmem agent`. */
export async function agentMain(): Promise<void> {
  // The agent must finish what it started even if the SSH session that ran it goes away:
  // a hangup mid-batch would leave the target with half a plan applied.
  process.on("SIGHUP", () => undefined);
  process.stdout.on("error", () => undefined);
  let raw: string;
  try {
    raw = await readStdin(MAX_REQUEST_BYTES);
  } catch (e) {
    const body = toErrorBody(e);
    process.stdout.write(JSON.stringify(errorReply(body)) + "\n");
    process.exitCode = EXIT_FAILED;
    return;
  }
  const { reply, exitCode } = await handleRequest(raw);
  process.stdout.write(JSON.stringify(reply) + "\n");
  process.exitCode = exitCode;
  // The stdin stream is paused, not closed: leave so a caller holding it open does not hang us.
  process.stdin.destroy();
}
