// Printing bench:fleet's results: wall time and ratios per phase, CPU per host on the
// controller and on the hosts, stalls, and the goals (against the real recipe).
import { median } from "../measure";
import { GOAL_DESTROY, GOAL_STALL, GOAL_UP, TargetMode } from "./config";
import { ControllerPart, controllerTotal } from "./controller-cpu";
import { Approach } from "./recipes";
import { CycleResult, PHASES, Phase, PhaseResult, Results } from "./run";

export const approachLabel = (a: Approach): string =>
  ({ lockmem: "lockmem", resident: "lockmem, lingering agent", command: "recipe (real @pulumi/command)", gdb: "recipe (EMULATION)", engine: "engine alone" })[a];

/** Ours: the default, and with agent.lingerSeconds when it was measured. */
const ours = (results: Results): Approach[] => (["lockmem", "resident"] as Approach[]).filter((a) => results[a] !== undefined);

/** Median over rounds of one number of one phase. */
export function med(rs: CycleResult[], ph: Phase, f: (p: PhaseResult) => number): number {
  return median(rs.map((r) => f(r.phases[ph])));
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
const pad = (v: string, n: number): string => v.padStart(n);
const ms0 = (v: number): string => v.toFixed(0);

function wallTable(results: Results, recipe: Approach, of: "ms" | "cliMs"): void {
  console.log(`phase     ours                        ours ms   ${recipe} ms   ${recipe}/ours   engine alone ms   ${recipe}/ours above the engine`);
  for (const ph of PHASES) {
    const [g, e] = ([recipe, "engine"] as Approach[]).map((a) => med(results[a]!, ph, (p) => p[of]));
    for (const a of ours(results)) {
      const l = med(results[a]!, ph, (p) => p[of]);
      const above = l > e && g > e ? `${((g - e) / (l - e)).toFixed(2)}x` : "-";
      console.log(`${ph.padEnd(9)} ${approachLabel(a).padEnd(24)} ${pad(ms0(l), 10)}   ${pad(ms0(g), recipe.length + 3)}   ${pad((g / l).toFixed(2), recipe.length + 5)}x   ${pad(ms0(e), 15)}   ${pad(above, recipe.length + 26)}`);
    }
  }
}

const PARTS: ControllerPart[] = ["program", "engine", "dynamicHost", "commandPlugin"];

function cpuLine(rs: CycleResult[], ph: Phase, hosts: number): string {
  const part = (k: ControllerPart): number => med(rs, ph, (p) => p.controller[k]) / hosts;
  const total = med(rs, ph, (p) => controllerTotal(p.controller)) / hosts;
  const host = med(rs, ph, (p) => sum(p.sshd)) / hosts;
  const kinds = [...new Set(rs.flatMap((r) => Object.keys(r.phases[ph].tools)))].sort();
  const tool = (k: string, f: "ms" | "runs"): number => med(rs, ph, (p) => p.tools[k]?.[f] ?? 0);
  const toolText = kinds.map((k) => `${k} ${ms0(tool(k, "ms") / hosts)} (${ms0(tool(k, "runs"))} runs)`).join(", ") || "-";
  return `${pad(ms0(total), 10)} = ${PARTS.map((k) => pad(ms0(part(k)), 4)).join(" + ")}   ${pad(ms0(host), 9)}   ${toolText}`;
}

/** When each approach's plugin process started, from the phase's start (median over rounds). */
function pluginStarts(results: Results): void {
  const cells: string[] = [];
  for (const a of Object.keys(results) as Approach[]) {
    const rs = results[a]!;
    const part = a === "command" ? "commandPlugin" : "dynamicHost";
    const at = (ph: Phase): string => {
      const seen = rs.map((r) => r.phases[ph].pluginStarts[part]).filter((v): v is number => v !== undefined);
      return seen.length ? `+${ms0(median(seen))}` : "- (not sampled)";
    };
    const text = PHASES.map((ph) => `${ph} ${at(ph)}`).join(" ");
    cells.push(`${approachLabel(a)} ${text}`);
  }
  console.log(`plugin process started, ms after the phase's start: ${cells.join("; ")}`);
}

/** CPU per host: the controller's (split by part) and the hosts' (all of sshd; the tool alone). */
export function cpuTable(results: Results, hosts: number): void {
  console.log(`CPU ms per host (median over rounds): controller = program + engine + dynamic-provider host + command plugin; host = everything its sshd ran (sshd, shells, the tool, also after its session ended: sshd is a subreaper); tool = our agent's node / the recipe's gdb alone`);
  console.log("phase     approach                          controller ms per host             host ms   tool ms per host");
  for (const ph of PHASES) {
    for (const a of Object.keys(results) as Approach[]) {
      console.log(`${ph.padEnd(9)} ${approachLabel(a).padEnd(32)} ${cpuLine(results[a]!, ph, hosts)}`);
    }
  }
}

function goal(what: string, ratio: number, min: number, note = ""): void {
  console.log(`${what}: ${ratio.toFixed(2)}x (goal >= ${min}x) ${ratio >= min ? "MET" : "NOT MET"}${note}`);
}

/** The whole report of one target mode. */
export function report(mode: TargetMode, results: Results, recipe: Approach, hosts: number): void {
  console.log("wall time (Automation API call, start to finish):");
  wallTable(results, recipe, "ms");
  console.log("the same, until the CLI printed its summary (without the Automation API's reading of outputs and history afterwards):");
  wallTable(results, recipe, "cliMs");
  cpuTable(results, hosts);
  pluginStarts(results);
  for (const a of ours(results)) {
    const lastRound = results[a]![results[a]!.length - 1];
    for (const ph of PHASES) if (lastRound.phases[ph].timeline) console.log(`timeline (LOCKMEM_TRACE, ${approachLabel(a)}, last round) ${lastRound.phases[ph].timeline}`);
  }
  const stalls = (a: Approach): number[] => results[a]!.flatMap((r) => r.stalls);
  const rc = stalls(recipe);
  const stallText = (a: Approach): string => `${approachLabel(a)} median ${ms0(median(stalls(a)))} max ${Math.max(...stalls(a))}`;
  console.log(`target stall (us, over every target, up and destroy): ${[...ours(results), recipe].map(stallText).join("; ")}`);
  const note = recipe === "gdb" ? " [against the EMULATION: build the real plugin for the headline]" : "";
  for (const a of ours(results)) {
    const ratio = (ph: Phase): number => med(results[recipe]!, ph, (p) => p.ms) / med(results[a]!, ph, (p) => p.ms);
    const who = `[${mode}] ${approachLabel(a)}:`;
    goal(`${who} up faster than the recipe`, ratio("up"), GOAL_UP[mode], note);
    goal(`${who} preview not slower than the recipe`, ratio("preview"), 1, note);
    goal(`${who} destroy faster than the recipe`, ratio("destroy"), GOAL_DESTROY, note);
    goal(`${who} longest stall shorter`, Math.max(...rc) / Math.max(Math.max(...stalls(a)), 1), GOAL_STALL, note);
  }
}
