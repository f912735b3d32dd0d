// With agent.install "never" the resource runs the lockmem already installed where its
// transport runs: an agent that is not there is said in the resource's terms (agent.path,
// agent.install), the same way for every transport.
import { AgentReply, AgentRequest } from "../../src/agent/protocol";
import { RunOptions, Transport, TransportError } from "./types";

/** The fix for an agent that is not there; other errors pass as they are. */
function missingAgent(e: unknown, agentPath: string | undefined, remote: boolean): unknown {
  if (!(e instanceof TransportError) || e.code !== "ENOAGENT") return e;
  const now = agentPath === undefined ? "unset: lockmem on the PATH" : JSON.stringify(agentPath);
  return new TransportError({
    code: e.code,
    where: e.where,
    message: e.message.startsWith(`${e.where}: `) ? e.message.slice(e.where.length + 2) : e.message,
    hint: `set agent.path (now ${now}) to the lockmem command ${remote ? "on the host" : "on this machine"}, install lockmem there (npm install -g pulumi-lockmem), or use agent.install: "auto"${remote ? " to have the provider deploy it" : ""}`,
  });
}

/** `transport`, running the agent at `agentPath` (on a host when `remote`, else on this machine). */
export function installedAgent(transport: Transport, agentPath: string | undefined, remote: boolean): Transport {
  return {
    where: transport.where,
    async run(request: AgentRequest, opts?: RunOptions): Promise<AgentReply> {
      try {
        return await transport.run(request, opts);
      } catch (e) {
        throw missingAgent(e, agentPath, remote);
      }
    },
    close: () => transport.close(),
  };
}
