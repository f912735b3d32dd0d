// Runs the agent on this machine: a child process (no shell), the request as JSON on stdin.
// The provider goes through the agent even locally, so local and remote run the same code.
import { spawn } from "child_process";
import { AgentReply, AgentRequest, PROTOCOL_VERSION } from "../../../src/agent/protocol";
import { AgentExit, captureText, checkVersionReply, interpretAgentExit } from "../agent-output";
import { timeLeft } from "../deadline";
import { DEFAULT_OPERATION_TIMEOUT_MS, RunOptions, Transport, TransportError } from "../types";

export interface LocalTransportOptions {
  /** The agent command (default ["lockmem", "agent"], found on PATH). */
  command?: string[];
  /** Run it through `sudo -n --`. */
  sudo?: boolean;
}

export class LocalTransport implements Transport {
  readonly where = "local";
  private readonly argv: string[];
  private readonly sudo: boolean;
  private handshake?: Promise<void>;

  constructor(opts: LocalTransportOptions = {}) {
    const command = opts.command ?? ["lockmem", "agent"];
    if (command.length === 0) throw new TransportError({ code: "EUSAGE", where: "local", message: "command is empty" });
    this.sudo = opts.sudo ?? false;
    this.argv = this.sudo ? ["sudo", "-n", "--", ...command] : command;
  }

  async run(request: AgentRequest, opts: RunOptions = {}): Promise<AgentReply> {
    const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_OPERATION_TIMEOUT_MS);
    if (request.op !== "version") {
      this.handshake ??= this.exec({ v: PROTOCOL_VERSION, op: "version" }, deadline).then((r) => {
        checkVersionReply(r, this.where);
      });
      try {
        await this.handshake;
      } catch (e) {
        this.handshake = undefined;
        throw e;
      }
    }
    return this.exec(request, deadline);
  }

  private exec(request: AgentRequest, deadline: number): Promise<AgentReply> {
    const command = this.argv.join(" ");
    return new Promise((resolve, reject) => {
      const child = spawn(this.argv[0], this.argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], shell: false });
      const stdout = captureText(child.stdout);
      const stderr = captureText(child.stderr);
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        child.kill("SIGTERM");
        reject(new TransportError({ code: "ETIMEDOUT", where: this.where, message: `\`${command}\` (${request.op}) did not answer in time` }));
      }, timeLeft(deadline));
      child.stdin.on("error", () => undefined); // an agent that exits early closes its stdin
      child.on("error", (e: NodeJS.ErrnoException) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(
          e.code === "ENOENT"
            ? new TransportError({ code: "ENOAGENT", where: this.where, message: `${this.argv[0]} not found`, hint: "install lockmem or give the agent command" })
            : new TransportError({ code: "EAGENT", where: this.where, message: `running \`${command}\`: ${e.message}` }),
        );
      });
      child.on("close", (exitCode, signal) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const exit: AgentExit = { stdout: stdout(), stderr: stderr(), exitCode, signal, command, where: this.where, sudo: this.sudo };
        try {
          resolve(interpretAgentExit(exit));
        } catch (e) {
          reject(e);
        }
      });
      child.stdin.end(JSON.stringify(request));
    });
  }

  async close(): Promise<void> {
    this.handshake = undefined;
  }
}
