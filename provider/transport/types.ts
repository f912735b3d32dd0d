// A transport runs `lockmem agent` somewhere with one request and returns its reply.
// Failures of the agent itself come back as error replies; failures to reach or run the
// agent (connection, host key, auth, sudo, timeout) are thrown as TransportError.
import { LockError } from "../../src/errors";
import { AgentReply, AgentRequest } from "../../src/agent/protocol";

export interface RunOptions {
  /** Deadline of the whole operation, dialing included (default 120 s). */
  timeoutMs?: number;
}

export interface Transport {
  /** Where the agent runs, for messages: "local", "ssh root@db1:22". */
  readonly where: string;
  run(request: AgentRequest, opts?: RunOptions): Promise<AgentReply>;
  /** Releases what this transport holds (a pooled SSH connection stays for other users of the pool). */
  close(): Promise<void>;
}

export const DEFAULT_OPERATION_TIMEOUT_MS = 120_000;

export type AgentInstall = "auto" | "never";

/** The resource's `agent` input: which agent runs the requests, and how it gets there. */
export interface AgentSettings {
  /** "auto" (default): push this package's agent to the host; "never": run `path`. */
  install?: AgentInstall;
  /** With install "never": the agent command on the host (default "lockmem" on PATH). */
  path?: string;
  /** With install "auto": the folder on the host that holds deployed agents (default ~/.lockmem/agent). */
  dir?: string;
  /**
   * With install "auto": keep the agent running on the host this many seconds after its
   * last request (default 0: it ends with the SSH session), so that later runs reach it over
   * SSH without starting Node. Not with sudo.
   */
  lingerSeconds?: number;
}

/**
 * What the provider knows of one transport for one resource's connection settings (each
 * transport's folder makes one; transportFor() in index.ts picks it): how the settings are
 * checked (`check`, dialing nothing), which machine they name (`diff`: another machine
 * means other processes, so a replacement), how it is named in messages, and the transport
 * itself.
 */
export interface TransportKind {
  /** The problem with the settings, in the resource's words ("connection: ..."), or undefined. */
  check(): string | undefined;
  /** Which machine the settings name: stable text, compared by `diff`. */
  machine(): string;
  /** "ssh root@db1:22" or "local": for messages, never holding a secret. */
  where(): string;
  /**
   * The transport that runs the resource's requests: the agent installed there (install
   * "never"), or this package's agent, with the step that deploys it where the provider
   * installs it.
   */
  open(agent: AgentSettings | undefined): Transport;
}

export type TransportErrorCode =
  | "ECONNECT" // the host could not be reached (after every dial attempt)
  | "EHOSTKEY" // the host key is unknown or does not match
  | "EAUTH" // authentication failed
  | "ESUDO" // sudo refused (password needed, not allowed)
  | "ENOAGENT" // the agent command was not found on the host
  | "EAGENT" // the agent ran but gave no usable reply
  | "EPROTO" // the agent speaks another protocol version
  | "ETIMEDOUT" // the operation's deadline passed
  | "ECLOSED" // the connection dropped while the agent was running
  | "EUSAGE"; // bad connection settings

export interface TransportErrorInit {
  code: TransportErrorCode;
  /** "ssh root@127.0.0.2:2222", "local". */
  where: string;
  message: string;
  hint?: string;
  /** The agent process's exit status when it ended without a reply (null: killed by a signal). */
  exitCode?: number | null;
  /** The agent command never started (no channel): nothing ran on the host. */
  notStarted?: boolean;
}

export class TransportError extends Error {
  readonly code: TransportErrorCode;
  readonly where: string;
  readonly hint?: string;
  readonly exitCode?: number | null;
  readonly notStarted: boolean;

  constructor(init: TransportErrorInit) {
    super(`${init.where}: ${init.message}`);
    this.name = "TransportError";
    this.code = init.code;
    this.where = init.where;
    this.hint = init.hint;
    this.exitCode = init.exitCode;
    this.notStarted = init.notStarted === true;
  }

  toJSON(): TransportErrorInit {
    return { code: this.code, where: this.where, message: this.message, hint: this.hint };
  }
}

/** The result of an ok reply, or the reply's error as a LockError (code and hint kept). */
export function resultOf<T>(reply: AgentReply, where: string): T {
  if (reply.ok) return reply.result as T;
  const { message, ...rest } = reply.error;
  throw new LockError({ ...rest, message: where === "local" ? message : `${where}: ${message}` });
}
