// Collects what an agent process leaves behind (stdout, stderr, exit status) and turns it
// into its reply, or into a TransportError that says what went wrong on the way: shared by
// every transport.
import { Readable } from "stream";
import { AgentErrorBody, AgentReply, PROTOCOL_VERSION, VersionResult, protocolMismatch } from "../../src/agent/protocol";
import { TransportError } from "./types";

export interface AgentExit {
  stdout: string;
  stderr: string;
  /** null when killed by a signal. */
  exitCode: number | null;
  signal?: string | null;
  /** The command that ran, for messages (never holds a secret: parameters go on stdin). */
  command: string;
  where: string;
  /** Whether the agent ran under `sudo -n`. */
  sudo: boolean;
}

/** Output kept from an agent: a reply is a few KiB, a status of a big process some 100 KiB. */
export const MAX_AGENT_OUTPUT = 16 * 1024 * 1024;

/** Keeps the text `stream` sends, up to MAX_AGENT_OUTPUT (what comes after is dropped). */
export function captureText(stream: Readable): () => string {
  let text = "";
  stream.on("data", (d: Buffer) => {
    if (text.length < MAX_AGENT_OUTPUT) text += d.toString("utf8");
  });
  return () => text;
}

function lastLines(text: string, max = 600): string {
  const t = text.trim();
  return t.length > max ? "..." + t.slice(t.length - max) : t;
}

function isReply(x: unknown): x is AgentReply {
  if (typeof x !== "object" || x === null) return false;
  const r = x as Record<string, unknown>;
  return typeof r.v === "number" && typeof r.ok === "boolean";
}

/** The error for a reply from an agent of another protocol version. */
export function mismatchError(agentVersion: number, where: string): TransportError {
  const body: AgentErrorBody = protocolMismatch(agentVersion, PROTOCOL_VERSION, "client", where);
  return new TransportError({ code: "EPROTO", where, message: body.message, hint: body.hint });
}

/**
 * The agent ran, but dlopen refused its addon: glibc says "cannot open shared object file:
 * No such file or directory" (ENOENT) for an ELF of another machine too (seen: the x64 addon
 * on an arm64 host), which the "not found" test of interpretAgentExit would otherwise take.
 */
function addonLoadFailure({ stderr, where, exitCode }: AgentExit): TransportError | undefined {
  if (!/cannot open shared object file|wrong ELF class|invalid ELF header|ELF load command/.test(stderr)) return undefined;
  return new TransportError({
    code: "EAGENT",
    where,
    exitCode,
    message: `the lockmem agent could not load its native addon (lockmem.node): ${lastLines(stderr, 300)}`,
    hint: 'the addon must be the one for this host\'s architecture (uname -m) and glibc: use agent.install: "auto" (the provider uploads the matching bundle), or install the pulumi-lockmem package on the host itself',
  });
}

export function interpretAgentExit(exit: AgentExit): AgentReply {
  const { where, command } = exit;
  const line = exit.stdout.split("\n").find((l) => l.trim() !== "");
  if (line !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      parsed = undefined;
    }
    if (isReply(parsed)) {
      if (parsed.v !== PROTOCOL_VERSION) throw mismatchError(parsed.v, where);
      return parsed;
    }
  }
  const stderr = exit.stderr;
  if (exit.sudo && /a password is required|a terminal is required/.test(stderr)) {
    throw new TransportError({
      code: "ESUDO",
      where,
      message: `sudo needs a password to run \`${command}\` (lockmem runs sudo -n, which never prompts)`,
      hint: "give the user a NOPASSWD sudoers rule for the lockmem agent, or connect as root",
    });
  }
  if (exit.sudo && /not in the sudoers file|is not allowed to (run|execute)|may not run sudo/.test(stderr)) {
    throw new TransportError({
      code: "ESUDO",
      where,
      message: `sudo refused to run \`${command}\`: ${lastLines(stderr, 300)}`,
      hint: "allow the user to run the lockmem agent with sudo (NOPASSWD), or connect as root",
    });
  }
  const addon = addonLoadFailure(exit);
  if (addon) throw addon;
  if (exit.exitCode === 127 || /command not found|No such file or directory/.test(stderr)) {
    throw new TransportError({
      code: "ENOAGENT",
      where,
      exitCode: exit.exitCode,
      message: `the lockmem agent was not found (\`${command}\` exited ${exit.exitCode}): ${lastLines(stderr, 300)}`,
      hint: 'install lockmem on the host (npm install -g pulumi-lockmem), set agentPath to where it is, or use agent.install: "auto"',
    });
  }
  const how = exit.exitCode === null ? `was killed by ${exit.signal ?? "a signal"}` : `exited with status ${exit.exitCode}`;
  throw new TransportError({
    code: "EAGENT",
    where,
    exitCode: exit.exitCode,
    message: `\`${command}\` ${how} without a reply${line !== undefined ? ` (stdout: ${lastLines(exit.stdout, 200)})` : ""}${stderr.trim() ? `; stderr: ${lastLines(stderr)}` : ""}`,
    hint: "run `lockmem agent` on the host by hand with the same request to see what happens",
  });
}

/** Checks the reply of the `version` handshake. */
export function checkVersionReply(reply: AgentReply, where: string): VersionResult {
  if (!reply.ok) {
    throw new TransportError({ code: "EAGENT", where, message: `version handshake failed: ${reply.error.message}`, hint: reply.error.hint });
  }
  const result = reply.result as Partial<VersionResult>;
  if (typeof result.protocol !== "number") {
    throw new TransportError({ code: "EPROTO", where, message: "the agent's version reply has no protocol number" });
  }
  if (result.protocol !== PROTOCOL_VERSION) throw mismatchError(result.protocol, where);
  return result as VersionResult;
}

/**
 * An EPERM from an agent that is not root most often just means "not root": say so, with
 * the fix, instead of leaving the operator to guess from a ptrace errno.
 */
export function explainUnprivileged(reply: AgentReply, agent: VersionResult, user: string, sudo: boolean): AgentReply {
  if (reply.ok || reply.error.code !== "EPERM" || agent.uid === 0) return reply;
  const why = `the agent runs as user "${user}" (uid ${agent.uid})${sudo ? "" : " without sudo"}, not as root`;
  const fix = sudo ? "let that user run the agent as root through sudo" : "connect as root, or set sudo: true with a NOPASSWD sudoers rule";
  return { ...reply, error: { ...reply.error, hint: `${why}: ${fix}${reply.error.hint ? `; ${reply.error.hint}` : ""}` } };
}
