// One approach's up / preview / destroy cycle on a fleet, with wall time, the longest
// stall any target saw, the controller's CPU and the hosts' CPU per phase.
import * as fs from "fs";
import { TestStack, withStack } from "../../tests/support/stack";
import { trace } from "../../provider/trace";
import { ANON_MB, PARALLEL } from "./config";
import { ControllerCpu, ControllerPart, startControllerMeter } from "./controller-cpu";
import { ToolCpu, lingeringCpu, sessionsEnded, sshdCpu, takeToolCpu } from "./host-cpu";
import { Approach, Fleet, program } from "./recipes";
import { phaseTimeline } from "./timeline";

export type Phase = "up" | "preview" | "destroy";
export const PHASES: Phase[] = ["up", "preview", "destroy"];

export interface PhaseResult {
  /** The Automation API call, start to finish (ms). */
  ms: number;
  /** Until the CLI printed its last output (its summary, just before it exits). */
  cliMs: number;
  controller: ControllerCpu;
  /** ms after the phase's start at which the dynamic-provider host / command plugin started. */
  pluginStarts: Partial<Record<ControllerPart, number>>;
  /** Per host: everything its sshd ran for this phase (ms). */
  sshd: number[];
  /** The tools on the hosts (our agent, the recipe's gdb). */
  tools: ToolCpu;
  /** From LOCKMEM_TRACE, for lockmem: when the provider's calls came within the phase. */
  timeline?: string;
}

export interface CycleResult {
  phases: Record<Phase, PhaseResult>;
  /** Longest heartbeat stall per target (us) over up and destroy; empty for "engine". */
  stalls: number[];
}

/** Where the bench keeps what a run needs besides the fleet. */
export interface RunContext {
  workDir: string;
  toolLogDir: string;
  /** Extra environment for the stacks' CLI (the command plugin's folder on PATH). */
  envVars: Record<string, string>;
}

async function measured(label: string, fleet: Fleet, ctx: RunContext, fn: (onOutput: () => void) => Promise<unknown>): Promise<PhaseResult> {
  await takeToolCpu(ctx.toolLogDir, `before ${label}`); // whatever earlier phases left
  const sshd0 = sshdCpu(fleet.fx);
  const resident0 = lingeringCpu(fleet.fx);
  const meter = startControllerMeter();
  const t0 = process.hrtime.bigint();
  let last = t0;
  trace("bench-start", label);
  await fn(() => (last = process.hrtime.bigint()));
  const end = process.hrtime.bigint();
  trace("bench-end", label);
  const controller = meter.stop();
  await sessionsEnded(fleet.fx, label);
  // A lingering agent that exits moves its CPU from the live count to sshd's reaped one: the sum holds.
  const residentMs = lingeringCpu(fleet.fx).map((v, i) => v - resident0[i]);
  const sshd = sshdCpu(fleet.fx).map((v, i) => v - sshd0[i] + residentMs[i]);
  const tools = await takeToolCpu(ctx.toolLogDir, label);
  const lingered = residentMs.reduce((a, b) => a + b, 0);
  if (lingered !== 0) tools["node-resident"] = { runs: residentMs.filter((v) => v !== 0).length, ms: lingered };
  const c = controller;
  trace("bench-cpu", `${label} controller ms: program ${c.program.toFixed(0)} engine ${c.engine.toFixed(0)} dynamic-provider-host ${c.dynamicHost.toFixed(0)} command-plugin ${c.commandPlugin.toFixed(0)}; hosts ms: ${sshd.map((v) => v.toFixed(0)).join(" ")}`);
  const pluginStarts = meter.starts();
  return { ms: Number(end - t0) / 1e6, cliMs: Number(last - t0) / 1e6, controller, pluginStarts, sshd, tools, timeline: phaseTimeline(label) };
}

async function resetStalls(fleet: Fleet): Promise<void> {
  await Promise.all(fleet.targets.map(({ target }) => target.resetStall()));
}

/** Longest heartbeat stall (us) per target since the last reset. */
async function maxStall(fleet: Fleet): Promise<number[]> {
  return Promise.all(
    fleet.targets.map(async ({ target }) => {
      const first = await target.stats();
      const s = await target.waitForStats((x) => x.heartbeat.iterations > first.heartbeat.iterations + 1, "two heartbeats");
      return s.heartbeat.max_stall_us;
    }),
  );
}

function lockedAll(fleet: Fleet, approach: Approach, expectLocked: boolean): void {
  for (const { target } of fleet.targets) {
    const vmLck = Number(/^VmLck:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${target.pid}/status`, "utf8"))?.[1] ?? 0);
    const ok = expectLocked ? vmLck >= ANON_MB * 1024 : vmLck === 0;
    if (!ok) throw new Error(`${approach}: target ${target.pid}: VmLck ${vmLck} kB, expected ${expectLocked ? `>= ${ANON_MB * 1024}` : 0}`);
  }
}

export async function runCycle(approach: Approach, fleet: Fleet, ctx: RunContext): Promise<CycleResult> {
  const p = program(approach, fleet);
  return withStack(
    p,
    async (s: TestStack) => {
      const phases = {} as Record<Phase, PhaseResult>;
      const run = async (ph: Phase, fn: (onOutput: () => void) => Promise<unknown>): Promise<void> => {
        phases[ph] = await measured(`${approach} ${ph}`, fleet, ctx, fn);
      };
      const up = (): Promise<void> => run("up", (onOutput) => s.up({ program: p, parallel: PARALLEL, onOutput }));
      const preview = (): Promise<void> => run("preview", (onOutput) => s.preview({ program: p, expectNoChanges: true, parallel: PARALLEL, onOutput }));
      const destroy = (): Promise<void> => run("destroy", (onOutput) => s.destroy({ parallel: PARALLEL, onOutput }));
      const real = approach !== "engine";
      if (real) await resetStalls(fleet);
      await up();
      if (real) lockedAll(fleet, approach, true);
      const upStalls = real ? await maxStall(fleet) : [];
      await preview();
      if (real) await resetStalls(fleet);
      await destroy();
      if (real) lockedAll(fleet, approach, false);
      const downStalls = real ? await maxStall(fleet) : [];
      return { phases, stalls: upStalls.map((u, i) => Math.max(u, downStalls[i])) };
    },
    { workDir: ctx.workDir, envVars: ctx.envVars },
  );
}

export type Results = Partial<Record<Approach, CycleResult[]>>;

/** Every approach, ROUNDS times, reversing their order from round to round. */
export async function measureRounds(approaches: Approach[], rounds: number, fleet: Fleet, ctx: RunContext, label: string): Promise<Results> {
  const results: Results = {};
  for (let round = 0; round < rounds; round++) {
    for (const a of round % 2 === 0 ? approaches : [...approaches].reverse()) {
      const r = await runCycle(a, fleet, ctx);
      (results[a] ??= []).push(r);
      const stall = r.stalls.length ? `, longest stall ${(Math.max(...r.stalls) / 1000).toFixed(1)} ms` : "";
      const ms = (ph: Phase): string => r.phases[ph].ms.toFixed(0);
      console.log(`${label} round ${round + 1} ${a.padEnd(7)}: up ${ms("up")} ms, preview ${ms("preview")} ms, destroy ${ms("destroy")} ms${stall}`);
    }
  }
  return results;
}
