// Targets in child pid namespaces (every container, every pod): locked from the host and
// from inside, as the namespace's init and as an ordinary process in it, nested twice;
// lockmem killed at every fault point. Each must leave the process exactly as the same
// test on a host process does: running, not traced, no journal left, no EINTR.
// Before the fix, a lock from the host exited 0 and left the process stopped: our own
// SIGSTOP was told apart by its sender pid, which reads 0 in the target's namespace.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as api from "../../src/api";
import { FAULT_POINTS, journalsIn, LOCKMEM_BIN, procState, runLockmem, safetySuite } from "../support/safety";
import { stressLabel } from "../support/stress";
import { waitUntil } from "../support/target";
import { startWaiters, Waiters } from "../support/waiters";
import { isTraced } from "../support/smaps";

jest.setTimeout(10 * 60_000);

const stateDir = safetySuite("containers");
const KINDS = ["epoll_wait", "io_uring_enter", "read", "nanosleep"];
const POINTS = FAULT_POINTS;


/** Pids of `pid` in each namespace, outermost first (NSpid). */
function nsPids(pid: number): number[] {
  const line = fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("NSpid:"))!;
  return line.split(/\s+/).slice(1).map(Number);
}

/** The first descendant of `pid` named `comm`. */
function descendant(pid: number, comm: string): number | undefined {
  const children = fs
    .readdirSync(`/proc/${pid}/task`)
    .flatMap((t) => fs.readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").trim().split(" ").filter(Boolean).map(Number));
  for (const c of children) {
    try {
      if (fs.readFileSync(`/proc/${c}/comm`, "utf8").trim() === comm) return c;
      const deeper = descendant(c, comm);
      if (deeper) return deeper;
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}

const UNSHARE = ["unshare", "--fork", "--pid", "--mount-proc"];

/** The waiters fixture in `depth` nested pid namespaces, as the init of the innermost one or as a child of a shell there. */
async function containerTarget(depth: number, asInit: boolean): Promise<{ w: Waiters; hostPid: number }> {
  const prefix: string[] = [];
  for (let i = 0; i < depth; i++) prefix.push(...UNSHARE);
  if (!asInit) prefix.push("sh", "-c", '"$@" & wait', "sh");
  const outer = await startWaiters(KINDS, { prefix, resolvePid: (shellPid) => waitUntil(() => descendant(shellPid, "waiters"), "the waiters process inside the namespace") });
  return { w: outer, hostPid: outer.pid };
}

function expectUnharmed(w: Waiters): void {
  expect(procState(w.pid)).not.toBe("T");
  expect(isTraced(w.pid)).toBe(false);
  expect(w.eintrs()).toEqual(Object.fromEntries(KINDS.map((k) => [k, 0])));
  expect(journalsIn(stateDir).filter((n) => !n.endsWith(".invalid"))).toEqual([]);
}

describe.each([
  [1, true],
  [1, false],
  [2, true],
  [2, false],
])(`a target in %i nested pid namespace(s), namespace init: %s (${stressLabel()})`, (depth, asInit) => {
  test("locked and unlocked from the host: running, untraced, no EINTR", async () => {
    const { w, hostPid } = await containerTarget(depth, asInit);
    try {
      expect(nsPids(hostPid).length).toBe(depth + 1);
      for (let i = 0; i < 5; i++) {
        const l = await api.lock({ target: { pid: hostPid } });
        expect(l.processes[0].error).toBeUndefined();
        expect(procState(hostPid)).not.toBe("T");
        const u = await api.unlock({ target: { pid: hostPid } });
        expect(u.processes[0].error).toBeUndefined();
        expect(procState(hostPid)).not.toBe("T");
      }
      expectUnharmed(w);
    } finally {
      w.stop();
    }
  });

  test("lockmem killed at every fault point: the guardian has it running again, with no `recover`", async () => {
    const { w, hostPid } = await containerTarget(depth, asInit);
    try {
      for (const point of POINTS) {
        const r = await runLockmem(stateDir, ["lock", "--pid", String(hostPid)], { LOCKMEM_TEST_KILL_AT: point });
        expect({ point, code: r.code }).toEqual({ point, code: 137 });
        await waitUntil(() => procState(hostPid) !== "T" && !isTraced(hostPid) && journalsIn(stateDir).length === 0, `process ${hostPid} running again after a kill at ${point}`, { timeoutMs: 10_000 });
        // Checked after every point, so that a failure names it.
        expect({ point, eintrs: w.eintrs() }).toEqual({ point, eintrs: Object.fromEntries(KINDS.map((k) => [k, 0])) });
        await api.unlock({ target: { pid: hostPid } });
      }
      expectUnharmed(w);
    } finally {
      w.stop();
    }
  });
});

test(`locked from inside its namespace (nsenter), as the container's own tooling would (${stressLabel()})`, async () => {
  const { w, hostPid } = await containerTarget(1, false);
  try {
    const init = nsPids(hostPid);
    const inner = init[init.length - 1];
    // The namespace's init is the parent shell; enter its pid and mount namespaces.
    const shell = Number(fs.readFileSync(`/proc/${hostPid}/stat`, "utf8").slice(fs.readFileSync(`/proc/${hostPid}/stat`, "utf8").lastIndexOf(")") + 2).split(" ")[1]);
    for (const verb of ["lock", "unlock"]) {
      const out = execFileSync("nsenter", ["--target", String(shell), "--pid", "--mount", process.execPath, LOCKMEM_BIN, verb, "--pid", String(inner), "--json"], {
        env: { ...process.env, LOCKMEM_STATE_DIR: path.join(stateDir, "inside") },
      }).toString();
      const report = JSON.parse(out) as { processes: { pid: number; error?: unknown }[] };
      expect(report.processes[0].pid).toBe(inner);
      expect(report.processes[0].error).toBeUndefined();
      expect(procState(hostPid)).not.toBe("T");
    }
    expectUnharmed(w);
  } finally {
    w.stop();
  }
});
