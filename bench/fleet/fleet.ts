// Setting up and tearing down what bench:fleet measures on: sshd hosts on loopback
// addresses with the tool wrappers on their sessions' PATH, and the targets.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { closeAll } from "../../provider/transport/ssh";
import { packageRoot } from "../../provider/agent/bundle";
import { startSshFixture } from "../../tests/support/sshd";
import { startTarget, stopAllTargets } from "../../tests/support/target";
import { ANON_MB, HEARTBEAT_US, TargetMode } from "./config";
import { buildSubreaper, installToolWrappers, lingeringAgents } from "./host-cpu";
import { pinHostSide } from "./pin";
import { Fleet } from "./recipes";
import { RunContext } from "./run";

export interface Scratch {
  ctx: RunContext;
  /** Where the "resident" approach's hosts keep their agents. */
  agentBase: string;
  binDir: string;
  /** Starts each sshd as a child subreaper (subreaper.c). */
  launcher: string[];
  remove(): void;
}

export function makeScratch(envVars: Record<string, string>): Scratch {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-bench-fleet-"));
  const binDir = path.join(dir, "bin");
  const toolLogDir = path.join(dir, "tool-cpu");
  fs.mkdirSync(binDir);
  installToolWrappers(binDir, toolLogDir);
  // The provider loads its implementation by package name: run the stacks from inside the package.
  const workBase = path.join(packageRoot(), "dist", "bench-stacks");
  fs.mkdirSync(workBase, { recursive: true });
  const workDir = fs.mkdtempSync(path.join(workBase, "fleet-"));
  return {
    ctx: { workDir, toolLogDir, envVars },
    agentBase: path.join(dir, "agents"),
    binDir,
    launcher: buildSubreaper(dir),
    remove: () => {
      fs.rmSync(workDir, { recursive: true, force: true });
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `hosts` sshd on 127.0.0.200 and up, each with `perHost` targets in `mode`. */
export async function startFleet(scratch: Scratch, hosts: number, perHost: number, mode: TargetMode): Promise<Fleet> {
  const fx = await startSshFixture({ hosts, firstOctet: 200, agentBinDir: scratch.binDir, agentWrapper: "/nonexistent/lockmem", launcher: scratch.launcher });
  try {
    for (const h of fx.hosts) pinHostSide(h.pid);
    return { fx, agentBase: scratch.agentBase, targets: await startTargets(hosts, perHost, mode) };
  } catch (e) {
    await fx.stop();
    throw e;
  }
}

export async function startTargets(hosts: number, perHost: number, mode: TargetMode): Promise<Fleet["targets"]> {
  const targets: Fleet["targets"] = [];
  // heartbeatUs 0: the target's heartbeat loop never pauses (tests/fixtures/target.c).
  const heartbeatUs = mode === "sleep" ? HEARTBEAT_US : 0;
  for (let h = 0; h < hosts; h++) {
    for (let k = 0; k < perHost; k++) {
      const target = await startTarget({ mode: "heartbeat", heartbeatUs, anonMb: ANON_MB, readyTimeoutMs: 60_000 });
      pinHostSide(target.pid);
      targets.push({ host: h, target });
    }
  }
  return targets;
}

export async function stopFleet(fleet: Fleet): Promise<void> {
  await closeAll();
  // The lingering agents of the "resident" approach (ours, found by their folder) go with the fleet.
  for (const pid of lingeringAgents(fleet.agentBase)) {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // gone already
    }
  }
  try {
    await fleet.fx.stop();
  } finally {
    await stopAllTargets();
  }
}
