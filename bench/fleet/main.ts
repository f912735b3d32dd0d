// `npm run bench:fleet`: `pulumi up`, `preview` and `destroy` of LockedProcessMemory over
// a fleet (default 10 sshd hosts x 2 targets, 64 MiB resident each) against the recipe
// users reach for today: @pulumi/command's remote.Command running
// `gdb -p PID -batch -ex 'call (int)mlockall(3)'` (munlockall on delete) per target.
// Same run, same targets, the real engine. Issue 17.
//
// The recipe is the REAL @pulumi/command 1.2.1 plugin whenever one is found (see
// plugin.ts; `bash scripts/command-plugin.sh` builds it); otherwise our emulation of it
// (a dynamic resource running the same gdb line over a fresh SSH connection), printed as
// EMULATION. For reference also the engine alone: as many dynamic resources doing nothing.
//
// Printed per target mode (sleeping and spinning targets, BENCH_TARGET_MODES): wall-time
// ratios, CPU per host on the controller (program, engine, dynamic-provider host, command
// plugin) and on the hosts (all of sshd; our agent's node or the recipe's gdb alone), the
// longest stall any target's heartbeat saw, and the issue's goals. BENCH_SCALE=1 adds
// fleets of 10 and 40 hosts x 1 target (scale.ts). LOCKMEM_TRACE=<file> timestamps the
// provider's steps and each measured phase (bench-start / bench-end).
//
// Needs root, openssh-server, gdb and `source scripts/toolchain.sh` (Node >= 22, pulumi).
// Knobs: BENCH_HOSTS (10), BENCH_TARGETS_PER_HOST (2), BENCH_ANON_MB (64), BENCH_ROUNDS (1),
// BENCH_HEARTBEAT_US (1000, sleeping targets), BENCH_TARGET_MODES (sleep,spin),
// BENCH_PARALLEL (unset: the CLI's default, 4 per CPU), BENCH_PIN (1: controller on CPU 0,
// hosts and targets on the others; 0: all share), BENCH_COMMAND_PLUGIN (a
// pulumi-resource-command binary, or "emulation"), BENCH_SCALE (0), BENCH_SCALE_HOSTS (10,40).
import { ANON_MB, HEARTBEAT_US, HOSTS, PARALLEL_TEXT, PER_HOST, ROUNDS, SCALE, TARGET_MODES, TargetMode } from "./config";
import { Scratch, makeScratch, startFleet, stopFleet } from "./fleet";
import { COMMAND_VERSION, CommandPlugin, findCommandPlugin, pluginEnv } from "./plugin";
import { Approach } from "./recipes";
import { approachLabel, report } from "./report";
import { measureRounds, runCycle } from "./run";
import { measureScale } from "./scale";
import { pinController, pinText } from "./pin";

function recipeText(plugin: CommandPlugin | undefined): string {
  return plugin
    ? `recipe: the REAL @pulumi/command ${COMMAND_VERSION} plugin ${plugin.file} (found via ${plugin.source}), remote.Command + gdb`
    : `recipe: EMULATION (a dynamic resource running the recipe's gdb line over a fresh SSH connection); ${
        process.env.BENCH_COMMAND_PLUGIN === "emulation" ? "chosen by BENCH_COMMAND_PLUGIN=emulation" : "no pulumi-resource-command found: run `bash scripts/command-plugin.sh` or set BENCH_COMMAND_PLUGIN to measure the real one"
      }`;
}

async function measureMode(mode: TargetMode, scratch: Scratch, recipe: Approach, deploy: boolean): Promise<void> {
  const fleet = await startFleet(scratch, HOSTS, PER_HOST, mode);
  try {
    // Deploy the agent once so that every measured lockmem round is a steady-state one
    // (the first `up` on a fresh host also uploads the bundle: reported separately).
    // The resident approach's first cycle also leaves its agents lingering on the hosts.
    const firsts: string[] = [];
    for (const a of (deploy ? ["lockmem", "resident"] : ["resident"]) as Approach[]) {
      const first = await runCycle(a, fleet, scratch.ctx);
      firsts.push(`${approachLabel(a)}: up ${first.phases.up.ms.toFixed(0)} ms, preview ${first.phases.preview.ms.toFixed(0)} ms, destroy ${first.phases.destroy.ms.toFixed(0)} ms`);
    }
    const firstCycle = `(first cycle, agent upload included: ${firsts.join("; ")})`;
    const results = await measureRounds(["lockmem", "resident", recipe, "engine"], ROUNDS, fleet, scratch.ctx, `[${mode}]`);
    const beat = mode === "sleep" ? `sleeping ${HEARTBEAT_US} us between heartbeats` : "spinning (no pause between heartbeats)";
    console.log(`\nbench:fleet [${mode}]: ${HOSTS} hosts x ${PER_HOST} targets (${ANON_MB} MiB resident each, ${beat}), real sshd on 127.0.0.x, real Pulumi engine (parallel ${PARALLEL_TEXT}), ${ROUNDS} round(s)`);
    if (firstCycle) console.log(firstCycle);
    report(mode, results, recipe, HOSTS);
    console.log("");
  } finally {
    await stopFleet(fleet);
  }
}

async function main(): Promise<void> {
  const plugin = findCommandPlugin();
  const recipe: Approach = plugin ? "command" : "gdb";
  console.log(recipeText(plugin));
  pinController();
  console.log(pinText());
  const scratch = makeScratch(pluginEnv(plugin));
  try {
    for (const [i, mode] of TARGET_MODES.entries()) await measureMode(mode, scratch, recipe, i === 0);
    if (SCALE) await measureScale(scratch, recipe);
    console.log(recipeText(plugin));
  } finally {
    scratch.remove();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
