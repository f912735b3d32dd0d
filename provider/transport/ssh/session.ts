// The persistent agent: one `<command> --serve` per pooled connection and agent command,
// fed one JSON line per request, instead of an agent process (Node on the host) per request.
import { ClientChannel } from "ssh2";
import { AgentReply, AgentRequest, RESIDENT_LINE, SOCKET_NAME } from "../../../src/agent/protocol";
import { AgentExit, MAX_AGENT_OUTPUT, interpretAgentExit } from "../agent-output";
import { timeLeft } from "../deadline";
import { cannotStart, collectOutput, noAnswer } from "./exec";
import type { Pooled } from "./pool";
import { TransportError } from "../types";
import { trace } from "../../trace";

/** The presumed command's line naming a resident agent's socket (an absolute path, as sun_path takes it). */
const RESIDENT = new RegExp(`^${RESIDENT_LINE} (/[^\\0]{1,100}/${SOCKET_NAME})$`);

interface Waiting {
  resolve: (r: AgentReply) => void;
  reject: (e: unknown) => void;
  line: string;
  /** The request's op, for LOCKMEM_TRACE. */
  op: string;
  /** The channel the line went to (a presumed command that named a resident never read it). */
  writtenTo?: ClientChannel;
}

/**
 * One long-lived agent on a pooled connection: requests go one at a time, in order, as
 * JSON lines; replies come back as lines. A channel that closes, or a request past its
 * deadline, ends the session (the next request starts a new one). With `linger`
 * (agent.lingerSeconds), the agent stays on the host after the session and later sessions
 * reach it through a direct-streamlocal channel to its socket, which sshd opens (no process
 * started on the host); the presumed command names that socket instead of starting Node.
 */
export class AgentSession {
  private channel?: ClientChannel;
  private opening?: Promise<ClientChannel>;
  private chain: Promise<unknown> = Promise.resolve();
  private waiting?: Waiting;
  private buffered = "";
  /** The exec channel whose first line may name a resident agent, until that line came. */
  private firstLineOf?: ClientChannel;
  private deadline = 0;

  constructor(
    private readonly p: Pooled,
    private readonly command: string,
    private readonly sudo: boolean,
    private readonly linger?: number,
    /** Where a resident agent's socket may be: tried first, in order (deploy.ts residentSocketGuesses). */
    private readonly residentSockets: string[] = [],
  ) {}

  request(request: AgentRequest, deadline: number): Promise<AgentReply> {
    const run = this.chain.then(() => this.send(request, deadline));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private commandLine(bind: boolean): string {
    if (this.linger === undefined) return `${this.command} --serve`;
    return `${this.command} --serve --linger=${this.linger}${bind ? " --bind" : ""}`;
  }

  private open(deadline: number): Promise<ClientChannel> {
    this.deadline = deadline;
    if (this.channel) return Promise.resolve(this.channel);
    if (!this.opening) {
      this.opening = this.openFirst(deadline).finally(() => {
        this.opening = undefined;
      });
    }
    return this.opening;
  }

  /** A resident agent's socket where one is guessed to be, else the agent's command. */
  private async openFirst(deadline: number): Promise<ClientChannel> {
    for (const socket of this.residentSockets) {
      try {
        return await this.forward(socket, deadline);
      } catch {
        // Not there (another architecture's folder, another home, no resident): next.
      }
    }
    return this.exec(false, deadline);
  }

  private exec(bind: boolean, deadline: number): Promise<ClientChannel> {
    const where = this.p.endpoint.where;
    return new Promise<ClientChannel>((resolve, reject) => {
      const timer = setTimeout(() => reject(new TransportError({ code: "ETIMEDOUT", where, message: "starting the agent did not finish within the deadline" })), timeLeft(deadline));
      trace("session-exec", where);
      this.p.client.exec(this.commandLine(bind), (err, stream) => {
        clearTimeout(timer);
        trace("session-open", where);
        if (err) return reject(cannotStart(this.p, this.command, err));
        this.attach(stream, this.linger !== undefined && !bind);
        resolve(stream);
      });
    });
  }

  /** The resident agent's socket, through sshd: no process starts on the host. */
  private forward(socket: string, deadline: number): Promise<ClientChannel> {
    const where = this.p.endpoint.where;
    return new Promise<ClientChannel>((resolve, reject) => {
      const timer = setTimeout(() => reject(new TransportError({ code: "ETIMEDOUT", where, message: "reaching the resident agent did not finish within the deadline" })), timeLeft(deadline));
      this.p.client.openssh_forwardOutStreamLocal(socket, (err, stream) => {
        clearTimeout(timer);
        trace("session-resident", where);
        if (err) return reject(err);
        this.attach(stream, false);
        resolve(stream);
      });
    });
  }

  private attach(stream: ClientChannel, mayNameResident: boolean): void {
    const where = this.p.endpoint.where;
    this.buffered = "";
    this.firstLineOf = mayNameResident ? stream : undefined;
    collectOutput(
      stream,
      ({ stderr, exitCode, signal }) => this.channel === stream && this.onClose({ stdout: "", stderr, exitCode: exitCode ?? null, signal, command: this.command, where, sudo: this.sudo }),
      // Data of a stream this session already dropped (reply too long, resident named) is ignored.
      (text) => {
        if (this.channel === stream) this.onData(text);
      },
    );
    this.channel = stream;
  }

  /**
   * The presumed command named a resident agent's socket and exited without reading
   * anything: the session moves to that socket, and the request waiting (never read) is
   * written there. A socket that does not answer (its agent gone) is taken over by a new
   * agent, started with --bind.
   */
  private moveToResident(socket: string): void {
    this.channel = undefined;
    this.buffered = "";
    const deadline = this.deadline;
    const moving = this.forward(socket, deadline)
      .catch(() => this.exec(true, deadline))
      .then((channel) => {
        this.writeWaiting(channel);
        return channel;
      });
    moving.catch((e: unknown) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.reject(e);
    });
    this.opening = moving.finally(() => {
      if (this.opening === moving) this.opening = undefined;
    });
  }

  private writeWaiting(channel: ClientChannel): void {
    const w = this.waiting;
    if (!w || w.writtenTo === channel || this.channel !== channel) return;
    w.writtenTo = channel;
    trace("request-sent", `${this.p.endpoint.where} ${w.op}`);
    channel.write(w.line);
  }

  private onData(text: string): void {
    this.buffered += text;
    for (let nl = this.buffered.indexOf("\n"); nl >= 0; nl = this.buffered.indexOf("\n")) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      if (this.firstLineOf !== undefined) {
        this.firstLineOf = undefined;
        const resident = RESIDENT.exec(line);
        if (resident) return this.moveToResident(resident[1]);
      }
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
    const where = this.p.endpoint.where;
    const reply = new Promise<AgentReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        this.end();
        reject(noAnswer(where, request.op));
      }, timeLeft(deadline));
      this.waiting = {
        line: JSON.stringify(request) + "\n",
        op: request.op,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
    const w = this.waiting;
    try {
      this.writeWaiting(await this.open(deadline));
    } catch (e) {
      if (this.waiting === w) this.waiting = undefined;
      w?.reject(e);
    }
    return reply;
  }

  /** Ends the agent: its stdin closes, it finishes what it does and exits. */
  end(): void {
    this.channel?.end();
    this.channel = undefined;
    this.p.sessions.delete(this.command);
  }
}

/** The session of `command` on `p`, started if there is none (the agent itself starts on the first request). */
export function sessionOf(p: Pooled, command: string, sudo: boolean, linger?: number, residentSockets: string[] = []): AgentSession {
  let session = p.sessions.get(command);
  if (!session) {
    session = new AgentSession(p, command, sudo, linger, residentSockets);
    p.sessions.set(command, session);
  }
  return session;
}
