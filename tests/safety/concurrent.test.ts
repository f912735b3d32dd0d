// One lockmem per target, whoever starts it (issue 13): operators run lockmem from cron and
// scripts, so two runs meet on one target. Before the per-target lock, a `recover` loop
// beside lock/unlock cycles dropped live journals (74 times), continued a held target (23
// times), and with the locking run killed meanwhile left targets stopped on injected
// registers. Here: lock/unlock cycles in bounded pauses (many sessions each) against
// `lockmem recover` and `lockmem status` loops on the same target, then the locking CLI
// killed at every fault point while other runs keep hammering. The target must end
// running, untraced, with no journal, no EINTR, its lock state whole.
import * as api from "../../src/api";
import { FAULT_POINTS, journalsIn, procState, runLockmem, safetySuite } from "../support/safety";
import { stressLabel } from "../support/stress";
import { waitUntil } from "../support/target";
import { startWaiters } from "../support/waiters";
import { isTraced } from "../support/smaps";

jest.setTimeout(15 * 60_000);

const stateDir = safetySuite("concurrent");
const POINTS = FAULT_POINTS;
const KINDS = ["main=epoll_wait", "epoll_wait", "nanosleep", "read", "io_uring_enter"];

/** Runs `step` over and over until `stop()` is true; resolves with how many ran. */
async function hammer(step: () => Promise<unknown>, stop: () => boolean): Promise<number> {
  let n = 0;
  while (!stop()) {
    await step();
    n++;
  }
  return n;
}

const journals = (): string[] => journalsIn(stateDir);
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runLockmem(stateDir, args, env);

test(`lock/unlock in bounded pauses against recover and status loops on the same target (${stressLabel()})`, async () => {
  const w = await startWaiters(KINDS);
  try {
    let done = false;
    const recovers = hammer(() => cli(["recover", "--pid", String(w.pid), "--json"]), () => done);
    const statuses = hammer(() => cli(["status", "--pid", String(w.pid), "--json"]), () => done);
    let sessions = 0;
    const failures: string[] = [];
    for (let i = 0; i < 15; i++) {
      for (const op of [api.lock, api.unlock]) {
        const r = await op({ target: { pid: w.pid }, maxPauseMs: 0.3 });
        const p = r.processes[0];
        if (p.error) failures.push(p.error.message);
        sessions += p.action?.sessions ?? 0;
        expect(procState(w.pid)).not.toBe("T");
      }
    }
    done = true;
    const [nRecover, nStatus] = await Promise.all([recovers, statuses]);
    console.log(`concurrent (${stressLabel()}): ${sessions} sessions beside ${nRecover} recover and ${nStatus} status runs; failures: ${failures.length}`);
    expect(failures).toEqual([]);
    expect(journals()).toEqual([]);
    expect(isTraced(w.pid)).toBe(false);
    expect(Object.values(w.eintrs()).reduce((a, b) => a + b, 0)).toBe(0);
    const s = await api.status({ target: { pid: w.pid }, mappings: { permissions: ["r-x", "rwx"] } });
    expect(s.processes[0].selection?.lockedMappings).toBe(0);
  } finally {
    w.stop();
  }
});

test(`the locking run killed at every fault point while other runs hammer the target (${stressLabel()})`, async () => {
  const w = await startWaiters(KINDS);
  try {
    let done = false;
    const others = [
      hammer(() => cli(["recover", "--pid", String(w.pid)]), () => done),
      hammer(async () => {
        await cli(["lock", "--pid", String(w.pid), "--max-pause-ms", "0.5"]);
        await cli(["unlock", "--pid", String(w.pid)]);
      }, () => done),
    ];
    const killed: Record<string, number | null> = {};
    for (const point of POINTS) {
      const r = await cli(["lock", "--pid", String(w.pid)], { LOCKMEM_TEST_KILL_AT: point });
      killed[point] = r.code;
    }
    done = true;
    await Promise.all(others);
    // Whoever came last, nobody needs to run anything: the guardians and the next runs have
    // put the target back.
    await waitUntil(() => procState(w.pid) !== "T" && !isTraced(w.pid) && journals().length === 0, "the target running, untraced, no journal", { timeoutMs: 10_000 });
    console.log(`kills (${stressLabel()}): exit codes ${JSON.stringify(killed)}`);
    expect(Object.values(w.eintrs()).reduce((a, b) => a + b, 0)).toBe(0);
    // Its lock state is whole: a full unlock leaves nothing locked.
    await api.unlock({ target: { pid: w.pid } });
    const s = await api.status({ target: { pid: w.pid }, mappings: { permissions: ["r-x", "rwx"] } });
    expect(s.processes[0].selection?.lockedMappings).toBe(0);
  } finally {
    w.stop();
  }
});
