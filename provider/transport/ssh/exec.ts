// One command on a pooled connection: the one collector of what an SSH command leaves
// (also used by deploy's shell commands), and a one-shot agent run, the request on its
// stdin and the reply on its stdout.
import { ClientChannel } from "ssh2";
import { AgentReply, AgentRequest } from "../../../src/agent/protocol";
import { AgentExit, captureText, interpretAgentExit } from "../agent-output";
import { timeLeft } from "../deadline";
import type { Pooled } from "./pool";
import { TransportError } from "../types";

export interface ChannelOutput {
  /** "" when the caller read stdout itself (see collectOutput). */
  stdout: string;
  stderr: string;
  /** undefined: the channel closed without an exit status. */
  exitCode: number | null | undefined;
  signal: string | null;
}

/**
 * Keeps what `stream` sends (each of stdout and stderr up to MAX_AGENT_OUTPUT) and its exit
 * status, and hands them to `onClose` when the channel closes. With `onStdout`, stdout goes
 * there as it comes instead (a session reads its replies line by line).
 */
export function collectOutput(stream: ClientChannel, onClose: (out: ChannelOutput) => void, onStdout?: (text: string) => void): void {
  const stdout = onStdout ? undefined : captureText(stream);
  if (onStdout) stream.on("data", (d: Buffer) => onStdout(d.toString("utf8")));
  const stderr = captureText(stream.stderr);
  let exitCode: number | null | undefined;
  let signal: string | null = null;
  stream.on("exit", (code: number | null, sig?: string) => {
    exitCode = code;
    signal = sig ?? null;
  });
  stream.on("close", () => onClose({ stdout: stdout?.() ?? "", stderr: stderr(), exitCode, signal }));
}

/** The agent did not answer in time: it may still finish, and resending converges. */
export function noAnswer(where: string, op: string): TransportError {
  return new TransportError({
    code: "ETIMEDOUT",
    where,
    message: `${op} did not answer within the deadline`,
    hint: "the agent may still finish on the host; send the same request again (lock and unlock converge), or give a longer timeout",
  });
}

/** The connection refused a channel for `command`; ECLOSED when it is gone (then dialing again may help). */
export function cannotStart(p: Pooled, command: string, err: Error): TransportError {
  return new TransportError({ code: p.closed ? "ECLOSED" : "EAGENT", where: p.endpoint.where, message: `cannot start \`${command}\`: ${err.message}`, notStarted: true });
}

function connectionLost(where: string, op: string): TransportError {
  return new TransportError({
    code: "ECLOSED",
    where,
    message: `the connection was lost while the agent ran ${op}`,
    hint: "the operation may or may not have happened on the host; send the same request again (lock and unlock converge to the same end state)",
  });
}

export function execAgent(p: Pooled, command: string, request: AgentRequest, deadline: number, sudo: boolean): Promise<AgentReply> {
  const where = p.endpoint.where;
  return new Promise((resolve, reject) => {
    let settled = false;
    let channel: ClientChannel | undefined;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(
      () =>
        finish(() => {
          channel?.close();
          reject(noAnswer(where, request.op));
        }),
      timeLeft(deadline),
    );
    p.client.exec(command, (err, stream) => {
      if (err) return finish(() => reject(cannotStart(p, command, err)));
      channel = stream;
      collectOutput(stream, ({ stdout, stderr, exitCode, signal }) => {
        if (exitCode === undefined && stdout === "") return finish(() => reject(connectionLost(where, request.op)));
        const exit: AgentExit = { stdout, stderr, exitCode: exitCode ?? null, signal, command, where, sudo };
        finish(() => {
          try {
            resolve(interpretAgentExit(exit));
          } catch (e) {
            reject(e);
          }
        });
      });
      stream.end(JSON.stringify(request));
    });
  });
}
