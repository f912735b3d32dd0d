// This machine, for a resource without `connection`: the agent as a child process.
import * as path from "path";
import { nativeUnavailable } from "../../../src/native";
import { packageRoot } from "../../agent/bundle";
import { installedAgent } from "../installed-agent";
import { AgentSettings, Transport, TransportKind } from "../types";
import { LocalTransport } from "./transport";

export { LocalTransport, LocalTransportOptions } from "./transport";

/** Every request fails with `error`: nothing can run here. */
function refusing(error: Error): Transport {
  return { where: "local", run: () => Promise.reject(error), close: async () => undefined };
}

const LOCAL: TransportKind = {
  check: () => undefined,
  machine: () => "local",
  where: () => "local",
  open(agent: AgentSettings | undefined): Transport {
    if (agent?.install === "never") return installedAgent(new LocalTransport({ command: [agent.path ?? "lockmem", "agent"] }), agent.path, false);
    // A controller without an addon for its platform (macOS, Windows, another arch) manages
    // remote hosts only: say so before starting an agent that could not lock anything.
    const unavailable = nativeUnavailable();
    if (unavailable) return refusing(unavailable);
    // This package's own agent, with the Node.js that runs the provider.
    return new LocalTransport({ command: [process.execPath, path.join(packageRoot(), "dist", "src", "agent", "main.js")] });
  },
};

/** This machine when there is no connection. */
export function localKind(connection: unknown): TransportKind | undefined {
  return connection === undefined ? LOCAL : undefined;
}
