// The persistent agent: one `<command> --serve` per pooled connection and agent command,
// fed one JSON line per request, instead of an agent process (Node on the host) per request.
import { ClientChannel } from "ssh2";
import { AgentReply, AgentRequest } from "../../../src/agent/protocol";
import { AgentExit, MAX_AGENT_OUTPUT, interpretAgentExit } from "../agent-output";
import { timeLeft } from "../deadline";
import { cannotStart, collectOutput, noAnswer } from "./exec";
import type { Pooled } from "./pool";
import { TransportError } from "../types";
import { trace } from "../../trace";

/**
 * One long-lived agent on a pooled connection: requests go one at a time, in order, as
 * JSON lines; replies come back as lines. A channel that closes, or a request past its
 * deadline, ends the session (the next request starts a new one).
 */
export class AgentSession {
  private channel?: ClientChannel;
  private opening?: Promise<ClientChannel>;
  private chain: Promise<unknown> = Promise.resolve();
  private waiting?: { resolve: (r: AgentReply) => void; reject: (e: unknown) => void };
  private buffered = "";

  constructor(
    private readonly p: Pooled,
    private readonly command: string,
    private readonly sudo: boolean,
  ) {}

  request(request: AgentRequest, deadline: number): Promise<AgentReply> {
    const run = this.chain.then(() => this.send(request, deadline));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private open(deadline: number): Promise<ClientChannel> {
    if (this.channel) return Promise.resolve(this.channel);
    if (!this.opening) {
      const where = this.p.endpoint.where;
      this.opening = new Promise<ClientChannel>((resolve, reject) => {
        const timer = setTimeout(() => reject(new TransportError({ code: "ETIMEDOUT", where, message: "starting the agent did not finish within the deadline" })), timeLeft(deadline));
        trace("session-exec", where);
        this.p.client.exec(`${this.command} --serve`, (err, stream) => {
          clearTimeout(timer);
          trace("session-open", where);
          if (err) return reject(cannotStart(this.p, this.command, err));
          this.buffered = "";
          collectOutput(
            stream,
            ({ stderr, exitCode, signal }) => this.channel === stream && this.onClose({ stdout: "", stderr, exitCode: exitCode ?? null, signal, command: this.command, where, sudo: this.sudo }),
            // Data of a stream this session already dropped (reply too long) is ignored.
            (text) => {
              if (this.channel === stream) this.onData(text);
            },
          );
          this.channel = stream;
          resolve(stream);
        });
      }).finally(() => {
        this.opening = undefined;
      });
    }
    return this.opening;
  }

  private onData(text: string): void {
    this.buffered += text;
    for (let nl = this.buffered.indexOf("\n"); nl >= 0; nl = this.buffered.indexOf("\n")) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      const w = this.waiting;
      this.waiting = undefined;
      trace("reply", this.p.endpoint.where);
      if (!w) continue;
      try {
        w.resolve(JSON.parse(line) as AgentReply);
      } catch {
        w.reject(new TransportError({ code: "EAGENT", where: this.p.endpoint.where, message: `the agent answered something that is not JSON: ${line.slice(0, 200)}` }));
      }
    }
    if (this.buffered.length > MAX_AGENT_OUTPUT) {
      // As the one-shot path caps what it keeps: a line this long is no reply of ours, and
      // buffering it would let a broken or hostile agent fill the provider's memory.
      const w = this.waiting;
      this.waiting = undefined;
      this.buffered = "";
      const channel = this.channel;
      this.end();
      channel?.close();
      w?.reject(
        new TransportError({
          code: "EAGENT",
          where: this.p.endpoint.where,
          message: `the agent sent a reply line longer than ${MAX_AGENT_OUTPUT} bytes; the session was closed`,
          hint: "the agent on the host is not a lockmem agent speaking this protocol; check agent.path or redeploy it",
        }),
      );
    }
  }

  private onClose(exit: AgentExit): void {
    this.channel = undefined;
    this.p.sessions.delete(this.command);
    const w = this.waiting;
    this.waiting = undefined;
    if (!w) return;
    try {
      // Closed before answering: the same reading as a one-shot agent that exited.
      w.resolve(interpretAgentExit(exit));
    } catch (e) {
      w.reject(e);
    }
  }

  private async send(request: AgentRequest, deadline: number): Promise<AgentReply> {
    const channel = await this.open(deadline);
    const where = this.p.endpoint.where;
    return new Promise<AgentReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        this.end();
        reject(noAnswer(where, request.op));
      }, timeLeft(deadline));
      this.waiting = {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      trace("request-sent", `${where} ${request.op}`);
      channel.write(JSON.stringify(request) + "\n");
    });
  }

  /** Ends the agent: its stdin closes, it finishes what it does and exits. */
  end(): void {
    this.channel?.end();
    this.channel = undefined;
    this.p.sessions.delete(this.command);
  }
}

/** The session of `command` on `p`, started if there is none (the agent itself starts on the first request). */
export function sessionOf(p: Pooled, command: string, sudo: boolean): AgentSession {
  let session = p.sessions.get(command);
  if (!session) {
    session = new AgentSession(p, command, sudo);
    p.sessions.set(command, session);
  }
  return session;
}
