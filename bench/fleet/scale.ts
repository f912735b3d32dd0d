// BENCH_SCALE=1: fleets of SCALE_HOSTS hosts x 1 sleeping target each (default 10 and 40),
// lockmem (by default and with a lingering agent) and the recipe, to see how `up` and the controller's CPU per host grow with the
// number of hosts (the goal: controller CPU per host roughly constant).
import { ROUNDS, SCALE_HOSTS } from "./config";
import { controllerTotal } from "./controller-cpu";
import { Scratch, startFleet, stopFleet } from "./fleet";
import { Approach } from "./recipes";
import { approachLabel, cpuTable, med } from "./report";
import { PHASES, Phase, Results, measureRounds, runCycle } from "./run";

interface Row {
  hosts: number;
  results: Results;
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

function line(row: Row, a: Approach): string {
  const rs = row.results[a]!;
  const wall = (ph: Phase): string => med(rs, ph, (p) => p.ms).toFixed(0).padStart(7);
  const cpu = (ph: Phase): string => (med(rs, ph, (p) => controllerTotal(p.controller)) / row.hosts).toFixed(0).padStart(5);
  const host = (med(rs, "up", (p) => sum(p.sshd)) / row.hosts).toFixed(0).padStart(5);
  return `${String(row.hosts).padStart(5)}   ${approachLabel(a).padEnd(30)} ${PHASES.map(wall).join(" ")}   ${PHASES.map(cpu).join(" ")}   ${host}`;
}

function printScale(rows: Row[], approaches: Approach[]): void {
  console.log(`\nscale: N hosts x 1 sleeping target, ${ROUNDS} round(s)`);
  console.log("hosts   approach                        up ms  prev ms  dest ms   controller CPU ms per host (up prev dest)   host CPU ms per host (up)");
  for (const row of rows) for (const a of approaches) console.log(line(row, a));
  const [first, last] = [rows[0], rows[rows.length - 1]];
  if (rows.length < 2) return;
  for (const a of approaches) {
    const upGrowth = med(last.results[a]!, "up", (p) => p.ms) / med(first.results[a]!, "up", (p) => p.ms);
    const perHost = (r: Row): number => med(r.results[a]!, "up", (p) => controllerTotal(p.controller)) / r.hosts;
    const cpuGrowth = perHost(last) / perHost(first);
    // The slope: what one more host costs, without the per-operation fixed part (CLI, engine start).
    const marginal = (perHost(last) * last.hosts - perHost(first) * first.hosts) / (last.hosts - first.hosts);
    console.log(`${approachLabel(a)}: from ${first.hosts} to ${last.hosts} hosts (${(last.hosts / first.hosts).toFixed(1)}x), up took ${upGrowth.toFixed(2)}x as long, controller CPU per host of up changed ${cpuGrowth.toFixed(2)}x (goal: roughly 1x); each added host cost ${marginal.toFixed(0)} ms of controller CPU (${first.hosts} hosts: ${perHost(first).toFixed(0)} ms per host on average)`);
  }
}

export async function measureScale(scratch: Scratch, recipe: Approach): Promise<void> {
  const approaches: Approach[] = ["lockmem", "resident", recipe];
  const rows: Row[] = [];
  for (const hosts of SCALE_HOSTS) {
    const fleet = await startFleet(scratch, hosts, 1, "sleep");
    try {
      // Deploys to the hosts the resident approach has not seen and leaves its agents there.
      await runCycle("resident", fleet, scratch.ctx);
      const results = await measureRounds(approaches, ROUNDS, fleet, scratch.ctx, `[scale ${hosts}]`);
      rows.push({ hosts, results });
      console.log(`\n[scale ${hosts} hosts x 1 target]`);
      cpuTable(results, hosts);
    } finally {
      await stopFleet(fleet);
    }
  }
  printScale(rows, approaches);
}
