// Lock and status on a fleet of SSH hosts: pooled connections (one per host, reused by
// every operation, as the provider does) against a fresh connection per operation, in the
// same run. Each host is a real sshd on its own loopback address with its own target.
// Modes are interleaved round by round so that load from other processes hits both alike.
//
// Run as root (sshd, useradd): `npx tsc -p tsconfig.json && node dist/bench/fleet-ssh.js`.
// Environment knobs: BENCH_HOSTS (default 20), BENCH_ROUNDS (default 3).
import { AgentRequest } from "../src/agent/protocol";
import { SshConnection, closeAll, pooledConnectionCount, sshTransport } from "../provider/transport/ssh";
import { buildAgentBundle } from "../tests/support/agent-bundle";
import { startSshFixture } from "../tests/support/sshd";
import { startTarget, stopAllTargets } from "../tests/support/target";
import { envInt } from "./env";


const HOSTS = envInt("BENCH_HOSTS", 20);
const ROUNDS = envInt("BENCH_ROUNDS", 3);

type Mode = "reused" | "fresh";
type Op = "lock" | "status";

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function main(): Promise<void> {
  const bundle = await buildAgentBundle();
  const fx = await startSshFixture({ hosts: HOSTS, firstOctet: 40, agentBinDir: bundle.binDir, agentWrapper: bundle.wrapper });
  try {
    const targets = await Promise.all(Array.from({ length: HOSTS }, () => startTarget({ anonMb: 4 })));
    const conns: SshConnection[] = fx.hosts.map((h) => ({ host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey }));
    const latency: Record<Mode, Record<Op, number[]>> = { reused: { lock: [], status: [] }, fresh: { lock: [], status: [] } };
    const fleetMs: Record<Mode, number[]> = { reused: [], fresh: [] };

    const run = async (mode: Mode, host: number, op: Op | "unlock"): Promise<number> => {
      if (mode === "fresh") await closeAll();
      const pid = targets[host].pid;
      const target = { pid };
      const req: AgentRequest =
        op === "status" ? { v: 1, op, args: { target } } : op === "lock" ? { v: 1, op, args: { target } } : { v: 1, op, args: { target } };
      const started = process.hrtime.bigint();
      const reply = await sshTransport(conns[host]).run(req, { timeoutMs: 120_000 });
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (!reply.ok) throw new Error(`${conns[host].host}: ${op} failed: ${reply.error.message}`);
      return ms;
    };

    // Warm-up: dial every host once (for the reused mode) and build caches.
    for (let h = 0; h < HOSTS; h++) await run("reused", h, "status");
    if (pooledConnectionCount() !== HOSTS) throw new Error(`expected ${HOSTS} pooled connections, found ${pooledConnectionCount()}`);

    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of (round % 2 === 0 ? ["reused", "fresh"] : ["fresh", "reused"]) as Mode[]) {
        if (mode === "reused") for (let h = 0; h < HOSTS; h++) await run("reused", h, "status"); // re-dial after a fresh pass
        const fleetStart = Date.now();
        for (let h = 0; h < HOSTS; h++) {
          latency[mode].lock.push(await run(mode, h, "lock"));
          latency[mode].status.push(await run(mode, h, "status"));
          await run(mode, h, "unlock");
        }
        fleetMs[mode].push(Date.now() - fleetStart);
      }
    }

    const fmt = (n: number): string => n.toFixed(0).padStart(6);
    console.log(`fleet-ssh: ${HOSTS} hosts (real sshd on 127.0.0.x), ${ROUNDS} rounds, one lock + status + unlock per host per round`);
    console.log("mode     op       median     p90  (ms per operation, sequential)");
    for (const mode of ["reused", "fresh"] as Mode[]) {
      for (const op of ["lock", "status"] as Op[]) {
        console.log(`${mode.padEnd(8)} ${op.padEnd(6)} ${fmt(quantile(latency[mode][op], 0.5))}  ${fmt(quantile(latency[mode][op], 0.9))}`);
      }
    }
    for (const op of ["lock", "status"] as Op[]) {
      const ratio = quantile(latency.fresh[op], 0.5) / quantile(latency.reused[op], 0.5);
      console.log(`ratio fresh/reused (median ${op}): ${ratio.toFixed(2)}x`);
    }
    const fleetRatio = quantile(fleetMs.fresh, 0.5) / quantile(fleetMs.reused, 0.5);
    console.log(`fleet pass (lock+status+unlock on ${HOSTS} hosts): reused ${quantile(fleetMs.reused, 0.5)} ms, fresh ${quantile(fleetMs.fresh, 0.5)} ms, ratio ${fleetRatio.toFixed(2)}x`);
  } finally {
    await closeAll();
    await fx.stop();
    await stopAllTargets();
    bundle.remove();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
