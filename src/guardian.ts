// The guardian: nobody has to run `lockmem recover`. Before its first ptrace session, a
// lockmem process starts one small companion process that holds the read end of a pipe
// whose write end only the lockmem process has. When lockmem dies (SIGKILL, the OOM
// killer, a torn-down SSH session), the kernel closes that end and the guardian wakes
// with EOF: it recovers every session its owner left in the journal (under the target
// lock, which the dead owner no longer holds), so the target runs again within
// milliseconds instead of staying stopped until someone notices. On a normal exit the same
// EOF finds nothing to do.
//
// Why this shape: the target must stay stopped while lockmem's registers may be in it
// (DESIGN.md, "the tracer dies"), so recovery has to come from another process; a pipe's
// EOF is the kernel's own notice of our death, immediate and without polling. The
// guardian is the same JS and addon (`--guardian`), so it recovers with the very code
// that `recover` runs. It lives in its own session (a signal to our process group or a
// terminal hang-up does not reach it), ignores SIGINT/SIGTERM/SIGHUP, and as root sets its
// oom_score_adj to -1000 so that the OOM killer that takes lockmem never takes it too.
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { recoverInterrupted, RecoveryResult } from "./journal";
import { IN_AGENT_BUNDLE, native } from "./native";
import { secureStateDir } from "./state-dir";

const READY = "ready\n";
// Starting Node takes ~50 ms on an idle host, seconds on a loaded one.
const START_TIMEOUT_MS = 30_000;

let guardian: ChildProcess | undefined;
let starting: Promise<void> | undefined;

/**
 * How to start `--guardian`: the very Node binary this process runs (/proc/PID/exe is the
 * inode we were started from, whatever its path holds now: an uploaded runtime was checked
 * before it ran), with the agent bundle's own bootstrap, which checks the bundle's files
 * again and loads only the addon it verified, or dist/src/agent/main.js of this package.
 */
function guardianCommand(): { file: string; args: string[] } {
  const file = `/proc/${process.pid}/exe`;
  // Bundled and bootstrapped: started as `node -e BOOT DIR JS_SHA256 ADDON_SHA256 [--serve]`.
  if (IN_AGENT_BUNDLE) return { file, args: [...process.execArgv, ...process.argv.slice(1, 4), "--guardian"] };
  const here = __filename;
  // Run from the TypeScript sources (tests): the compiled package next to them.
  if (here.endsWith(".ts")) return { file, args: [path.join(__dirname, "..", "dist", "src", "agent", "main.js"), "--guardian"] };
  // A single-file build of the agent run as a script: that very file.
  if (require.main?.filename === here) return { file, args: [here, "--guardian"] };
  return { file, args: [path.join(__dirname, "agent", "main.js"), "--guardian"] };
}

function alive(child: ChildProcess | undefined): boolean {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

/** Starts the guardian of this process once (again if it died); resolves when it is ready. */
export function ensureGuardian(): Promise<void> {
  // Tests of what happens without one (status and doctor showing a dead run's target).
  if (process.env.LOCKMEM_TEST_NO_GUARDIAN === "1") return Promise.resolve();
  if (alive(guardian) && starting) return starting;
  const env: NodeJS.ProcessEnv = { ...process.env, LOCKMEM_GUARDIAN_OWNER: String(process.pid) };
  // The fault tests kill lockmem at a point of its session; never its guardian's own.
  delete env.LOCKMEM_TEST_KILL_AT;
  const command = guardianCommand();
  const child = spawn(command.file, command.args, {
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
    env,
  });
  guardian = child;
  starting = new Promise<void>((resolve, reject) => {
    let out = "";
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    const timer = setTimeout(() => fail(new Error(`the lockmem guardian did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(err);
    };
    child.on("error", fail);
    child.on("exit", (code, signal) => fail(new Error(`the lockmem guardian exited at start (${signal ?? `exit ${code}`})${err.trim() ? `: ${err.trim().split("\n").slice(-14).join(" / ")}` : ""}`)));
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (!out.startsWith(READY)) return;
      clearTimeout(timer);
      child.removeAllListeners("exit");
      child.stdout!.destroy();
      child.stderr!.destroy();
      // It must not keep this process alive, and its pipe stays open until we exit.
      child.stdin!.on("error", () => undefined);
      (child.stdin as unknown as { unref?: () => void }).unref?.();
      child.unref();
      resolve();
    });
  });
  return starting;
}

function appendLog(results: RecoveryResult[], owner: number): void {
  try {
    const file = path.join(secureStateDir(), "guardian.log");
    if (fs.existsSync(file) && fs.statSync(file).size > 256 * 1024) fs.renameSync(file, `${file}.1`);
    const at = new Date().toISOString();
    fs.appendFileSync(file, results.map((r) => JSON.stringify({ at, owner, ...r }) + "\n").join(""), { mode: 0o600 });
  } catch {
    // The recovery itself is what matters; a log it cannot write changes nothing.
  }
}

/** The guardian process (`--guardian`): wait for the owner to go, then recover its sessions. */
export async function guardianMain(): Promise<void> {
  const owner = Number(process.env.LOCKMEM_GUARDIAN_OWNER);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE"] as const) process.on(sig, () => undefined);
  if (process.getuid?.() === 0) {
    try {
      fs.writeFileSync("/proc/self/oom_score_adj", "-1000");
    } catch {
      // a container may forbid it: we are small anyway
    }
  }
  native(); // loaded now, not when every millisecond counts
  process.stdout.write(READY);
  await new Promise<void>((resolve) => {
    process.stdin.on("data", () => undefined);
    process.stdin.on("end", resolve);
    process.stdin.on("error", () => resolve());
    process.stdin.on("close", () => resolve());
  });
  if (!Number.isSafeInteger(owner) || owner <= 0) return;
  const results = await recoverInterrupted(undefined, { owner }).catch((err: unknown) => {
    appendLog([{ pid: 0, tid: 0, outcome: "refused", detail: `recovery failed: ${err instanceof Error ? err.message : String(err)}` }], owner);
    return [] as RecoveryResult[];
  });
  if (results.length > 0) appendLog(results, owner);
  process.exit(0);
}
