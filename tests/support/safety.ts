// What the safety suites share: a state dir of their own, the stress hooks of the second
// pass (tests/support/stress.ts), the CLI run as a user runs it, and the kernel's view of a
// target.
import { execFile } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "./repo";
import { startStress, stopStress } from "./stress";
import { workDir } from "./target";
import { stopAllWaiters } from "./waiters";

export const REPO = repoRoot();
export const LOCKMEM_BIN = path.join(REPO, "bin", "lockmem");

/**
 * The fault points of one session, in the order it passes them (faultPoint() in native/;
 * LOCKMEM_TEST_KILL_AT=<point> kills lockmem there). tests/unit/fault-points.test.ts keeps
 * this list and the native sources in step.
 */
export const FAULT_POINTS = [
  "journal-begin",
  "seized",
  "sigstop-sent",
  "stopped",
  "regs-journaled",
  "syscall-entry",
  "syscall-exit",
  "before-restore",
  "detached",
  "before-cont",
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

/** Sets up a suite: its own state dir (returned), the CPU load in stress mode, cleanup. */
export function safetySuite(name: string): string {
  const stateDir = path.join(workDir(), `state-${name}-${process.pid}`);
  beforeAll(() => {
    process.env.LOCKMEM_STATE_DIR = stateDir;
    startStress();
  });
  afterAll(async () => {
    stopAllWaiters();
    await stopStress();
  });
  return stateDir;
}

/** One letter from /proc/PID/stat. */
export function procState(pid: number): string {
  const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  return text.slice(text.lastIndexOf(")") + 2).split(" ")[0];
}

/** The journal files left in a state dir. */
export function journalsIn(stateDir: string): string[] {
  try {
    return fs.readdirSync(path.join(stateDir, "journal"));
  } catch {
    return [];
  }
}

export interface CliResult {
  /** The exit code, or 128 + 9 when lockmem was SIGKILLed (the fault points kill it), as a shell says. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the installed `lockmem` command with the suite's state dir (SIGKILLed after timeoutMs, if given). */
export function runLockmem(stateDir: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 0): Promise<CliResult> {
  return new Promise((resolve) => {
    const options = { env: { ...process.env, LOCKMEM_STATE_DIR: stateDir, ...env }, timeout: timeoutMs, killSignal: "SIGKILL" as const };
    execFile(process.execPath, [LOCKMEM_BIN, ...args], options, (err, stdout, stderr) => {
      const e = err as { code?: number; signal?: string } | null;
      resolve({ code: e ? (e.code ?? (e.signal === "SIGKILL" ? 137 : null)) : 0, stdout, stderr });
    });
  });
}
