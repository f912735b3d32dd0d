// The knobs of `npm run bench:fleet`, read once from the environment (BENCH_*).
import * as os from "os";
import { envInt } from "../env";

export const HOSTS = envInt("BENCH_HOSTS", 10);
export const PER_HOST = envInt("BENCH_TARGETS_PER_HOST", 2);
export const ANON_MB = envInt("BENCH_ANON_MB", 64);
export const ROUNDS = envInt("BENCH_ROUNDS", 1);
/** Sleep between heartbeats: 20 targets beating every 100 us would starve 2 cores by themselves. */
export const HEARTBEAT_US = envInt("BENCH_HEARTBEAT_US", 1000);
/**
 * BENCH_PIN (1 by default on a machine with 2 CPUs or more): the controller (the bench, the
 * engine and its plugins) on CPU 0, the hosts (each sshd and everything its sessions run)
 * and their targets on the others. In production the hosts are other machines: busy targets
 * load them, not the controller. 0: everything shares every CPU.
 */
export const PIN = os.cpus().length >= 2 && envInt("BENCH_PIN", 1, 0) > 0;
/**
 * `--parallel` for every approach alike; unset: the CLI's default (4 per CPU), which a
 * pinned CLI would compute from its one CPU: then the default of the whole machine, given.
 */
export const PARALLEL = process.env.BENCH_PARALLEL ? envInt("BENCH_PARALLEL", 1) : PIN ? 4 * os.cpus().length : undefined;
export const PARALLEL_TEXT = `${process.env.BENCH_PARALLEL ? PARALLEL : `default: ${4 * os.cpus().length}`}`;

/**
 * How the targets spend the time between heartbeats: "sleep" (nanosleep HEARTBEAT_US, an
 * idle service) or "spin" (no pause: the target keeps its CPU busy, as a loaded database
 * does, so everything else on the host competes with it for the CPUs).
 */
export type TargetMode = "sleep" | "spin";

function targetModes(): TargetMode[] {
  const text = process.env.BENCH_TARGET_MODES;
  if (text === undefined || text.trim() === "") return ["sleep", "spin"];
  const modes = text.split(",").map((m) => m.trim());
  for (const m of modes) {
    if (m !== "sleep" && m !== "spin") throw new TypeError(`BENCH_TARGET_MODES: expected a comma-separated list of "sleep" and "spin", got ${JSON.stringify(text)}`);
  }
  return [...new Set(modes)] as TargetMode[];
}
export const TARGET_MODES = targetModes();

/** BENCH_SCALE=1: also run fleets of SCALE_HOSTS hosts x 1 target (sleeping targets). */
export const SCALE = envInt("BENCH_SCALE", 0, 0) > 0;

function scaleHosts(): number[] {
  const text = process.env.BENCH_SCALE_HOSTS;
  if (text === undefined || text.trim() === "") return [10, 40];
  const hosts = text.split(",").map((h) => Number(h.trim()));
  // Loopback addresses 127.0.0.200 and up: at most 55 hosts fit below .255.
  if (hosts.some((h) => !Number.isInteger(h) || h < 1 || h > 55)) throw new TypeError(`BENCH_SCALE_HOSTS: expected a comma-separated list of integers 1..55, got ${JSON.stringify(text)}`);
  return hosts;
}
export const SCALE_HOSTS = scaleHosts();

/**
 * agent.lingerSeconds of the "resident" approach (lockmem with a lingering agent, each host
 * with its own agent folder, as separate machines would have): long enough to outlive the
 * whole bench, whose fleet kills them at its end.
 */
export const RESIDENT_LINGER = envInt("BENCH_LINGER", 900, 1);

export const GOAL_UP: Record<TargetMode, number> = { sleep: 3, spin: 1.5 };
export const GOAL_STALL = 10;
export const GOAL_DESTROY = 2;
