// Inline runner of examples/fleet on this machine: starts real sshd test hosts on
// 127.0.0.x (as the tests do) with one process each, then up, preview and destroy.
// Needs root, openssh-server and the `pulumi` CLI (`source scripts/toolchain.sh`).
//
//   npm run example:fleet            (FLEET_HOSTS=3 by default)
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { startSshFixture } from "../../tests/support/sshd";
import { startTarget, stopAllTargets } from "../../tests/support/target";
import { exampleStack, runOperation } from "../inline";
import { fleetProgram } from "./program";

async function main(): Promise<void> {
  const count = Number(process.env.FLEET_HOSTS ?? 3);
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-fleet-example-"));
  fs.mkdirSync(path.join(scratch, "bin"));
  const fx = await startSshFixture({ hosts: count, firstOctet: 170, agentBinDir: path.join(scratch, "bin"), agentWrapper: "/nonexistent/lockmem" });
  try {
    const comms: string[] = [];
    for (let i = 0; i < count; i++) {
      comms.push(`fleetdemo${i}`);
      await startTarget({ comm: comms[i], anonMb: 16 });
    }
    const hosts = fx.hosts.map((h, i) => ({ name: `host${i}`, host: h.address, port: h.port, user: "root", hostKey: h.hostKey }));
    const stack = await exampleStack(
      "lockmem-fleet",
      fleetProgram({
        hosts,
        privateKey: fx.userKey.privateKey,
        target: (h) => ({ name: comms[hosts.findIndex((x) => x.name === h.name)] }),
        // The demo hosts share this machine: give each its own agent folder.
        agentDir: (h) => path.join(scratch, "agents", h.name),
      }),
    );
    await runOperation(stack, "up");
    await runOperation(stack, "preview");
    await runOperation(stack, "destroy");
    await stack.workspace.removeStack("dev");
  } finally {
    await fx.stop();
    await stopAllTargets();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
