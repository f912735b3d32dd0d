// The set-up the arm64 guest suites share: Debian bookworm's arm64 guest booted, the static
// fixtures uploaded to /tmp, the agent deployed as the provider deploys it, and one
// persistent agent session to drive it; stop() ends all of it and prints what the guest cost.
import { DeployedAgent, ensureAgent } from "../../provider/agent/deploy";
import { closeAll, SshTransport } from "../../provider/transport/ssh";
import { resultOf } from "../../provider/transport/types";
import { PROTOCOL_VERSION } from "../../src/agent/protocol";
import { bootGuest, buildGuest, Guest, GuestImage } from "./guest";
import { staticFixture } from "./guest-binaries";

export interface AgentGuest {
  image: GuestImage;
  guest: Guest;
  deployed: DeployedAgent;
  agent: SshTransport;
  /** One request to the persistent agent session; its result, or the agent's error thrown. */
  call<T>(op: "lock" | "unlock" | "status", args: object): Promise<T>;
  stop(): Promise<void>;
}

export async function bootArm64WithAgent(fixtures: ("target" | "waiters")[], timeoutMs: number): Promise<AgentGuest> {
  const image = await buildGuest("bookworm", "arm64");
  const guest = await bootGuest(image);
  const started = Date.now();
  try {
    for (const f of fixtures) await guest.upload(staticFixture(f, "arm64"), `/tmp/${f}`);
    const deployed = await ensureAgent(guest.connection(), { timeoutMs });
    const agent = new SshTransport(guest.connection(), { agentCommand: deployed.command, agentVersion: deployed.version, persistent: true });
    return {
      image,
      guest,
      deployed,
      agent,
      async call<T>(op: "lock" | "unlock" | "status", args: object): Promise<T> {
        const reply = await agent.run({ v: PROTOCOL_VERSION, op, args } as never, { timeoutMs });
        return resultOf<T>(reply, agent.where);
      },
      async stop() {
        await closeAll();
        await guest.stop();
        const build = image.cached ? `cached (${image.elapsedMs} ms; first build took ${image.buildSeconds} s)` : `cold ${image.buildSeconds} s`;
        console.log(`guest ${image.name} (${image.kernelRelease}): build ${build}, boot to sshd ${(guest.bootMs / 1000).toFixed(1)} s, tests ${((Date.now() - started) / 1000).toFixed(1)} s`);
      },
    };
  } catch (e) {
    await guest.stop();
    throw e;
  }
}
