// Stress mode of the safety suites (issue 13): races show under load, so scripts/test.sh
// runs tests/safety twice, once quiet and once with LOCKMEM_STRESS set, where each suite
// saturates the CPUs with a load generator it starts itself: `stress-ng --cpu` at three
// times the core count, niced (LOCKMEM_STRESS=nice) or at the targets' own priority
// (LOCKMEM_STRESS=1). Only processes started here are ever stopped.
import { ChildProcess, spawn } from "child_process";
import * as os from "os";

export type StressMode = "quiet" | "cpu" | "cpu-niced";

export function stressMode(): StressMode {
  const v = process.env.LOCKMEM_STRESS;
  if (!v || v === "0") return "quiet";
  return v === "nice" ? "cpu-niced" : "cpu";
}

let load: ChildProcess | undefined;

/** Starts the load for this suite (nothing in quiet mode); call from beforeAll. */
export function startStress(): void {
  const mode = stressMode();
  if (mode === "quiet" || load) return;
  const workers = String(os.cpus().length * 3);
  const args = ["--cpu", workers, "--cpu-method", "matrixprod", "--timeout", "3600s", "--quiet"];
  load = mode === "cpu-niced" ? spawn("nice", ["-n", "10", "stress-ng", ...args], { stdio: "ignore" }) : spawn("stress-ng", args, { stdio: "ignore" });
  load.on("error", (err) => {
    throw new Error(`LOCKMEM_STRESS needs stress-ng (Debian package stress-ng): ${err.message}`);
  });
}

/** Stops the load started by startStress(); call from afterAll. */
export async function stopStress(): Promise<void> {
  const child = load;
  load = undefined;
  if (!child || child.exitCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    // stress-ng forwards SIGTERM to its workers and waits for them.
    child.kill("SIGTERM");
  });
}

/** A label for test names and printed figures. */
export function stressLabel(): string {
  return stressMode() === "quiet" ? "quiet machine" : `under CPU stress (${stressMode()})`;
}
