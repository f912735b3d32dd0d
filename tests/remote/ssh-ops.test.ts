// lock / unlock / status over SSH against real sshd and real targets: the same end state
// as the local agent, an SSH session killed mid-operation, serialisation of concurrent
// changes, and a fleet of 10 hosts under 50 concurrent operations.
import * as fs from "fs";
import * as path from "path";
import { AgentReply, AgentRequest } from "../../src/agent/protocol";
import { lockTargets } from "../../src/agent/target-lock";
import { HostReport, ProcessReport } from "../../src/api";
import { LocalTransport } from "../../provider/transport/local";
import { SshConnection, closeAll, pooledConnectionCount, sshTransport } from "../../provider/transport/ssh";
import { TransportError } from "../../provider/transport/types";
import { AgentBundle, buildAgentBundle } from "../support/agent-bundle";
import { SshFixture, startSshFixture } from "../support/sshd";
import { TargetOptions, startTarget, stopAllTargets } from "../support/target";

jest.setTimeout(180_000);

const HOSTS = 10;
const TARGET_OPTS: TargetOptions = { anonMb: 8, threads: 2, threadMode: "sleep" };

let bundle: AgentBundle;
let fx: SshFixture;

function conn(host: number): SshConnection {
  const h = fx.hosts[host];
  return { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey };
}

function vmLckKb(pid: number): number {
  return Number(/VmLck:\s*(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN);
}

function report(reply: AgentReply): ProcessReport {
  if (!reply.ok) throw new Error(`agent error: ${JSON.stringify(reply.error)}`);
  return (reply.result as HostReport<ProcessReport>).processes[0];
}

/** What must be equal between two identical targets (addresses and pids differ by design). */
function shape(p: ProcessReport): { vmLck: number; mappings: string[] } {
  return {
    vmLck: p.vmLck,
    mappings: p.mappings
      .filter((m) => m.mode.includes("x"))
      .map((m) => `${m.kind}|${m.mapping.replace(/\/targets\/[^/]+\//, "/targets/T/")}|${m.mode}|${m.size}|locked=${m.vmLocked}|lockable=${m.lockable}`)
      .sort(),
  };
}

const status = (pid: number): AgentRequest => ({ v: 1, op: "status", args: { target: { pid } } });
const lock = (pid: number, waitMs?: number): AgentRequest => ({ v: 1, op: "lock", args: { target: { pid } }, ...(waitMs === undefined ? {} : { waitMs }) });
const unlock = (pid: number, waitMs?: number): AgentRequest => ({ v: 1, op: "unlock", args: { target: { pid } }, ...(waitMs === undefined ? {} : { waitMs }) });

/** The agent processes (bundled lockmem agent) running under the given sshd host. */
function agentsUnder(host: number): number[] {
  return fx.hosts[host].sessionPids().filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(bundle.dir);
    } catch {
      return false;
    }
  });
}

// The agents' per-target lock files (src/target-lock.ts: <state dir>/locks/<pid>.lock; the
// agents here run as root with the default state dir).
const LOCK_DIR = "/run/lockmem/locks";

/** Processes of the host's sessions that have `pid`'s lock file open: they hold it or wait for it. */
function lockWaitersUnder(host: number, pid: number): number {
  const file = path.join(LOCK_DIR, `${pid}.lock`);
  return fx.hosts[host].sessionPids().filter((p) => {
    try {
      return fs.readdirSync(`/proc/${p}/fd`).some((fd) => {
        try {
          return fs.readlinkSync(`/proc/${p}/fd/${fd}`) === file;
        } catch {
          return false;
        }
      });
    } catch {
      return false;
    }
  }).length;
}

async function waitFor(what: string, ms: number, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until no agent holds or waits for the target's lock (an orphaned agent finishing). */
async function quiesce(pid: number): Promise<void> {
  (await lockTargets([pid], { op: "test-quiesce", waitMs: 60_000, dir: LOCK_DIR })).release();
}

beforeAll(async () => {
  bundle = await buildAgentBundle();
  fx = await startSshFixture({ hosts: HOSTS, firstOctet: 20, agentBinDir: bundle.binDir, agentWrapper: bundle.wrapper });
});

afterAll(async () => {
  await closeAll();
  await fx?.stop();
  await stopAllTargets();
  bundle?.remove();
});

test("status, lock and unlock over SSH leave the target exactly as the local agent does", async () => {
  const [remoteTarget, localTarget] = await Promise.all([startTarget(TARGET_OPTS), startTarget(TARGET_OPTS)]);
  const ssh = sshTransport(conn(0));
  const local = new LocalTransport({ command: [bundle.wrapper, "agent"] });

  const before = [report(await ssh.run(status(remoteTarget.pid))), report(await local.run(status(localTarget.pid)))];
  expect(before[0].pid).toBe(remoteTarget.pid);
  expect(shape(before[0])).toEqual(shape(before[1]));
  expect(before[0].vmLck).toBe(0);

  const locked = [report(await ssh.run(lock(remoteTarget.pid))), report(await local.run(lock(localTarget.pid)))];
  expect(locked[0].vmLck).toBeGreaterThan(0);
  expect(shape(locked[0])).toEqual(shape(locked[1]));
  expect(vmLckKb(remoteTarget.pid)).toBe(vmLckKb(localTarget.pid));
  // What status reports over SSH is what the kernel says.
  const after = report(await ssh.run(status(remoteTarget.pid)));
  expect(after.vmLck).toBe(vmLckKb(remoteTarget.pid) * 1024);
  expect(shape(after)).toEqual(shape(report(await local.run(status(localTarget.pid)))));

  const unlocked = [report(await ssh.run(unlock(remoteTarget.pid))), report(await local.run(unlock(localTarget.pid)))];
  expect(shape(unlocked[0])).toEqual(shape(unlocked[1]));
  expect(vmLckKb(remoteTarget.pid)).toBe(0);
  expect(remoteTarget.isAlive() && localTarget.isAlive()).toBe(true);
  await Promise.all([remoteTarget.stop(), localTarget.stop()]);
});

test("SSH session killed while the agent waits to lock: target untouched, resending converges", async () => {
  const target = await startTarget(TARGET_OPTS);
  const reference = await startTarget(TARGET_OPTS);
  const local = new LocalTransport({ command: [bundle.wrapper, "agent"] });
  const expected = shape(report(await local.run(lock(reference.pid))));

  // Hold the target's lock ourselves so the agent is caught mid-operation, deterministically.
  const held = await lockTargets([target.pid], { op: "test", waitMs: 0, dir: LOCK_DIR });
  const ssh = sshTransport(conn(1));
  await ssh.run({ v: 1, op: "version" });
  const pending = ssh.run(lock(target.pid, 60_000));
  pending.catch(() => undefined);
  await waitFor("the agent to wait for the target lock", 20_000, () => lockWaitersUnder(1, target.pid) > 0);
  const orphans = agentsUnder(1);
  expect(orphans.length).toBe(1);
  // Kill the connection's sshd processes (not the agent): the network side of the session is gone.
  const monitors = fx.hosts[1].sessionPids().filter((pid) => fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "sshd");
  expect(monitors.length).toBeGreaterThan(0);
  for (const pid of monitors) process.kill(pid, "SIGKILL");
  const err = await pending.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TransportError);
  expect((err as TransportError).code).toBe("ECLOSED");
  expect((err as TransportError).hint).toContain("send the same request again");
  expect(vmLckKb(target.pid)).toBe(0);
  expect(target.state()).not.toBe("T");
  held.release();

  // The orphaned agent may now finish its lock; either way, resending converges.
  await quiesce(target.pid);
  const again = report(await ssh.run(lock(target.pid)));
  expect(shape(again)).toEqual(expected);
  expect(vmLckKb(target.pid)).toBe(vmLckKb(reference.pid));
  expect(target.isAlive()).toBe(true);
  await Promise.all([target.stop(), reference.stop()]);
});

test("SSH session killed at random points during real locks: never a broken target, always converges", async () => {
  const target = await startTarget({ ...TARGET_OPTS, anonMb: 64 });
  const reference = await startTarget({ ...TARGET_OPTS, anonMb: 64 });
  const local = new LocalTransport({ command: [bundle.wrapper, "agent"] });
  const expected = shape(report(await local.run(lock(reference.pid))));
  const ssh = sshTransport(conn(2));
  for (let i = 0; i < 6; i++) {
    await ssh.run(unlock(target.pid));
    const pending = ssh.run(lock(target.pid));
    pending.catch(() => undefined);
    await waitFor("the agent to start", 10_000, () => agentsUnder(2).length > 0);
    await new Promise((r) => setTimeout(r, i * 15)); // where in the agent's run the cut falls
    for (const pid of fx.hosts[2].sessionPids()) {
      if (fs.existsSync(`/proc/${pid}`) && fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "sshd") process.kill(pid, "SIGKILL");
    }
    await pending.then(
      () => undefined,
      () => undefined,
    );
    await quiesce(target.pid);
    await waitFor("orphaned agents to exit", 20_000, () => !fs.readdirSync("/proc").some((p) => /^\d+$/.test(p) && safeCmdline(Number(p)).includes(bundle.dir)));
    expect(target.isAlive()).toBe(true);
    expect(target.state()).not.toBe("T");
    const lck = vmLckKb(target.pid);
    expect(lck === 0 || lck === vmLckKb(reference.pid)).toBe(true);
    const again = report(await ssh.run(lock(target.pid)));
    expect(shape(again)).toEqual(expected);
  }
  const stats = await target.stats();
  expect(stats.ok).toBe(true);
  await Promise.all([target.stop(), reference.stop()]);
});

function safeCmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}

test("two concurrent changes of one target are serialised; a third gives up with EBUSY", async () => {
  const target = await startTarget(TARGET_OPTS);
  const held = await lockTargets([target.pid], { op: "test", waitMs: 0, dir: LOCK_DIR });
  const a = sshTransport(conn(3));
  const b = sshTransport(conn(4));
  await Promise.all([a.run({ v: 1, op: "version" }), b.run({ v: 1, op: "version" })]);
  const first = a.run(lock(target.pid, 60_000));
  await waitFor("the first agent to wait", 20_000, () => lockWaitersUnder(3, target.pid) > 0);
  const second = b.run(unlock(target.pid, 60_000));
  await waitFor("the second agent to wait", 20_000, () => lockWaitersUnder(4, target.pid) > 0);

  const busy = await sshTransport(conn(5)).run(lock(target.pid, 300));
  expect(busy.ok).toBe(false);
  if (!busy.ok) {
    expect(busy.error.code).toBe("EBUSY");
    expect(busy.error.message).toContain(`process ${target.pid} is busy`);
    expect(busy.error.message).toContain("gave up after waiting");
  }
  expect(vmLckKb(target.pid)).toBe(0);
  held.release();
  const [r1, r2] = await Promise.all([first, second]);
  expect(r1.ok && r2.ok).toBe(true);
  // Whichever ran last decided the end state, and it is a whole state, never a mix.
  const final = vmLckKb(target.pid);
  const lockedKb = report(r1).vmLck / 1024;
  expect(final === 0 || final === lockedKb).toBe(true);
  await target.stop();
});

test("50 concurrent operations over 10 hosts complete without error, one connection per host", async () => {
  await closeAll();
  const targets = await Promise.all(Array.from({ length: HOSTS }, () => startTarget(TARGET_OPTS)));
  const ops: Array<{ host: number; req: AgentRequest }> = [];
  for (let i = 0; i < 50; i++) {
    const host = i % HOSTS;
    const pid = targets[host].pid;
    const kind = Math.floor(i / HOSTS); // 0..4: status, lock, status, plan, status
    const req: AgentRequest =
      kind === 1 ? lock(pid, 60_000) : kind === 3 ? { v: 1, op: "plan", args: { target: { pid } } } : status(pid);
    ops.push({ host, req });
  }
  const started = Date.now();
  const replies = await Promise.all(ops.map(({ host, req }) => sshTransport(conn(host)).run(req, { timeoutMs: 120_000 })));
  const took = Date.now() - started;
  const failures = replies.filter((r) => !r.ok);
  expect(failures).toEqual([]);
  expect(pooledConnectionCount()).toBe(HOSTS);
  for (const t of targets) expect(vmLckKb(t.pid)).toBeGreaterThan(0);
  await Promise.all(targets.map((t) => sshTransport(conn(targets.indexOf(t))).run(unlock(t.pid))));
  for (const t of targets) expect(vmLckKb(t.pid)).toBe(0);
  console.log(`50 concurrent operations over ${HOSTS} hosts: ${took} ms`);
  await Promise.all(targets.map((t) => t.stop()));
});
