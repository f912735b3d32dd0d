// The guardian: nobody has to run `lockmem recover`. Before its first ptrace session, a
// lockmem process forks a stub (native/guardian_stub.h) that holds the read end of a pipe
// whose write end only the lockmem process has. When lockmem dies (SIGKILL, the OOM
// killer, a torn-down SSH session), the kernel closes that end and the stub wakes with EOF:
// it executes the guardian proper (this file's guardianMain, the same executable, JS and
// addon), which recovers every session its owner left in the journal (under the target
// lock, which the dead owner no longer holds), so the target runs again within a Node.js
// start instead of staying stopped until someone notices. On a normal exit with no session
// of its own journaled, lockmem writes "D" first and the stub just exits.
//
// Why this shape: the target must stay stopped while lockmem's registers may be in it
// (DESIGN.md, "the tracer dies"), so recovery has to come from another process; a pipe's
// EOF is the kernel's own notice of our death, immediate and without polling. A fork costs
// about a millisecond where starting a second Node.js costs ~100 ms of CPU per operation on
// every host (issue 17: on a busy host that start also delayed every operation). The stub
// lives in its own session (a signal to our process group or a terminal hang-up does not
// reach it), ignores SIGINT/SIGTERM/SIGHUP, keeps none of our descriptors (our target locks
// die with us), and as root sets its oom_score_adj to -1000 so that the OOM killer that takes
// lockmem never takes it too.
import * as fs from "fs";
import * as path from "path";
import { recoverInterrupted, RecoveryResult } from "./journal";
import { IN_AGENT_BUNDLE, native } from "./native";
import { secureStateDir } from "./state-dir";

/** The stub of this process, once forked. */
let stub: { pid: number; fd: number } | undefined;

/**
 * The arguments of `--guardian` after the program: the stub executes the very Node binary
 * this process runs (the inode it opens at the fork, whatever its path holds by then: an
 * uploaded runtime was checked before it ran), with the agent bundle's own bootstrap, which
 * checks the bundle's files again and loads only the addon it verified, or
 * dist/src/agent/main.js of this package.
 */
function guardianArgs(): string[] {
  // Bundled and bootstrapped: started as `node -e BOOT DIR JS_SHA256 ADDON_SHA256 [--serve]`.
  if (IN_AGENT_BUNDLE) return [...process.execArgv, ...process.argv.slice(1, 4), "--guardian"];
  const here = __filename;
  // Run from the TypeScript sources (tests): the compiled package next to them.
  if (here.endsWith(".ts")) return [path.join(__dirname, "..", "dist", "src", "agent", "main.js"), "--guardian"];
  // A single-file build of the agent run as a script: that very file.
  if (require.main?.filename === here) return [here, "--guardian"];
  return [path.join(__dirname, "agent", "main.js"), "--guardian"];
}

/** The stub is there, not a zombie (nothing reaps it while we live: it is not libuv's child). */
function stubAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** A session of this process is still journaled (to be recovered): cannot tell counts as yes. */
function ownJournalsLeft(): boolean {
  let dir: string;
  let names: string[];
  try {
    dir = secureStateDir("journal");
    names = fs.readdirSync(dir);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ENOENT";
  }
  return names.some((name) => {
    if (!name.endsWith(".json")) return false;
    try {
      return (JSON.parse(fs.readFileSync(path.join(dir, name), "utf8")) as { owner?: unknown } | null)?.owner === process.pid;
    } catch {
      return true;
    }
  });
}

/** At exit: tell the stub that nothing is left for it, unless something is. */
function dismissGuardian(): void {
  if (!stub || ownJournalsLeft()) return;
  try {
    fs.writeSync(stub.fd, "D");
  } catch {
    // It is gone or cannot be told: then it recovers nothing, at the cost of a Node start.
  }
}

/** Forks the guardian's stub of this process once (again if it died). */
export function ensureGuardian(): Promise<void> {
  // Tests of what happens without one (status and doctor showing a dead run's target).
  if (process.env.LOCKMEM_TEST_NO_GUARDIAN === "1") return Promise.resolve();
  if (stub && stubAlive(stub.pid)) return Promise.resolve();
  const env: NodeJS.ProcessEnv = { ...process.env, LOCKMEM_GUARDIAN_OWNER: String(process.pid) };
  // The fault tests kill lockmem at a point of its session; never its guardian's own.
  delete env.LOCKMEM_TEST_KILL_AT;
  try {
    const first = stub === undefined;
    stub = native().startGuardianStub({
      argv: [process.argv0, ...guardianArgs()],
      env: Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`])),
    });
    if (first) process.on("exit", dismissGuardian);
    return Promise.resolve();
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
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

/** The guardian process (`--guardian`), executed by the stub once its owner is gone: recover its sessions. */
export async function guardianMain(): Promise<void> {
  const owner = Number(process.env.LOCKMEM_GUARDIAN_OWNER);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE"] as const) process.on(sig, () => undefined);
  if (!Number.isSafeInteger(owner) || owner <= 0) return;
  const results = await recoverInterrupted(undefined, { owner }).catch((err: unknown) => {
    appendLog([{ pid: 0, tid: 0, outcome: "refused", detail: `recovery failed: ${err instanceof Error ? err.message : String(err)}` }], owner);
    return [] as RecoveryResult[];
  });
  if (results.length > 0) appendLog(results, owner);
  process.exit(0);
}
