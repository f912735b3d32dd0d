// aarch64 where users live (issue 19, as tests/safety/containers.test.ts and
// concurrent.test.ts on the host): in the arm64 guest, with the agent the provider deploys,
// - a target that is pid 1 of a child pid namespace (a container without an init of its
//   own), locked and unlocked from the guest's root namespace: our SIGSTOP's sender pid
//   reads 0 in there, which once left such targets stopped after a "successful" lock;
// - two agents at once on one target (cron and an operator), while two shell loops keep
//   both guest CPUs busy: every run done (the target lock serialises them) or refused with
//   EBUSY, never a target stopped, traced, or an EINTR.
// - a lingering agent (agent.lingerSeconds): a later run reaches it through sshd at the
//   socket guessed for the arm64 bundle folder, without running anything on the guest.
// Targets are the waiters fixture with the EINTR-prone calls of arm64, whose re-arm needs
// the call's first argument the stop hides (native/arch/aarch64.cc).
import { DeployedAgent, presumedAgentCommand, residentSocketGuesses } from "../../provider/agent/deploy";
import { SshTransport, closeAll } from "../../provider/transport/ssh";
import { resultOf } from "../../provider/transport/types";
import { PROTOCOL_VERSION } from "../../src/agent/protocol";
import { HostReport, ProcessResult } from "../../src/ops/types";
import { Guest } from "../support/guest";
import { AgentGuest, bootArm64WithAgent } from "../support/guest-agent";
import { eintrDiff, GuestWaiters, startGuestWaiters } from "../support/guest-waiters";
import { waitUntil } from "../support/target";

jest.setTimeout(30 * 60_000);

const CYCLES = Number(process.env.LOCKMEM_GUEST_CYCLES ?? 5);
const OP_TIMEOUT_MS = 300_000;
const EINTR_PRONE = ["epoll_pwait", "epoll_pwait2", "io_uring_enter", "sigtimedwait", "semtimedop"];
const RESTARTED = ["read", "nanosleep", "futex"];

let g: AgentGuest;
let guest: Guest;
let deployed: DeployedAgent;

beforeAll(async () => {
  g = await bootArm64WithAgent(["waiters"], OP_TIMEOUT_MS);
  ({ guest, deployed } = g);
});

afterAll(async () => {
  await g?.stop();
});

type Op = "lock" | "unlock";

async function viaPersistent(op: Op, pid: number): Promise<ProcessResult> {
  return (await g.call<HostReport<ProcessResult>>(op, { target: { pid } })).processes[0];
}

/** A one-shot run of the deployed agent (what a second operator's or cron's run is). */
async function viaOneShot(op: Op, pid: number): Promise<ProcessResult> {
  const request = JSON.stringify({ v: PROTOCOL_VERSION, op, args: { target: { pid } } });
  const r = await guest.run(`printf '%s\\n' '${request}' | ${deployed.command}`, OP_TIMEOUT_MS);
  const reply = JSON.parse(r.stdout.trim().split("\n").pop() ?? "null") as unknown;
  return resultOf<HostReport<ProcessResult>>(reply as never, "guest one-shot").processes[0];
}

/** Every thread running, none traced, no journal of it left. */
async function unharmed(pid: number): Promise<string[]> {
  const out = await guest.check(
    `for t in /proc/${pid}/task/*; do echo "$(cut -d' ' -f3 $t/stat) $(grep TracerPid $t/status | cut -f2)"; done; ls /run/lockmem/journal 2>/dev/null | grep "^${pid}-" || true`,
  );
  const problems: string[] = [];
  for (const line of out.trim().split("\n")) {
    const m = /^(\S) (\d+)$/.exec(line);
    if (!m) problems.push(`journal left: ${line}`);
    else if (m[1] === "T" || m[1] === "t" || m[2] !== "0") problems.push(`thread state ${m[1]}, tracer ${m[2]}`);
  }
  return problems;
}

test(`a target that is pid 1 of a child pid namespace: ${CYCLES} lock/unlock cycles from the root namespace, running, untraced, no EINTR`, async () => {
  const w: GuestWaiters = await startGuestWaiters(guest, [...EINTR_PRONE, ...RESTARTED], { pidNamespace: true });
  try {
    const nspid = (await guest.check(`grep NSpid /proc/${w.pid}/status`)).trim().split(/\s+/).slice(1);
    expect(nspid).toEqual([String(w.pid), "1"]);
    const before = await w.eintrs();
    const errors: string[] = [];
    for (let i = 0; i < CYCLES; i++) {
      for (const op of ["lock", "unlock"] as const) {
        const r = await viaPersistent(op, w.pid);
        if (r.error) errors.push(`${op}: ${r.error.message}`);
        errors.push(...(await unharmed(w.pid)).map((p) => `after ${op}: ${p}`));
      }
    }
    expect(errors).toEqual([]);
    expect(eintrDiff(await w.eintrs(), before)).toEqual({});
    console.log(`${g.image.name}: pid-namespace init target (NSpid ${nspid.join(" ")}), ${2 * CYCLES} sessions, no EINTR`);
  } finally {
    await w.stop();
  }
});

test(`two agents at once on one target, both guest CPUs busy: ${CYCLES} rounds, every run done or EBUSY, no harm`, async () => {
  const w: GuestWaiters = await startGuestWaiters(guest, [...EINTR_PRONE, ...RESTARTED]);
  const spinners = (await guest.check(`for i in 1 2; do (while :; do :; done) </dev/null >/dev/null 2>&1 & echo $!; done`)).trim().split(/\s+/);
  try {
    const before = await w.eintrs();
    const outcomes: string[] = [];
    const errors: string[] = [];
    for (let i = 0; i < CYCLES; i++) {
      const op: Op = i % 2 === 0 ? "lock" : "unlock";
      const runs = await Promise.all([viaPersistent(op, w.pid), viaOneShot(op, w.pid)]);
      for (const r of runs) {
        outcomes.push(r.error ? r.error.code : r.outcome);
        if (r.error && r.error.code !== "EBUSY") errors.push(`${op}: ${r.error.code} ${r.error.message}`);
      }
      errors.push(...(await unharmed(w.pid)).map((p) => `after round ${i + 1}: ${p}`));
    }
    // The last round unlocks when CYCLES is even: one more so the target ends as it began.
    if (CYCLES % 2 === 1) expect((await viaPersistent("unlock", w.pid)).error).toBeUndefined();
    expect(errors).toEqual([]);
    expect(outcomes.filter((o) => o !== "EBUSY").length).toBeGreaterThanOrEqual(CYCLES);
    const after = await waitUntil(async () => ((await unharmed(w.pid)).length === 0 ? w.eintrs() : undefined), "the target unharmed", {
      timeoutMs: 60_000,
      intervalMs: 500,
    });
    expect(eintrDiff(after, before)).toEqual({});
    console.log(`${g.image.name}: two agents at once under load, ${CYCLES} rounds: ${outcomes.join(" ")}; no EINTR`);
  } finally {
    await guest.run(`kill -9 ${spinners.join(" ")}`);
    await w.stop();
  }
});

test("a lingering agent: the next run opens its socket in the arm64 bundle folder, running nothing on the guest", async () => {
  const w: GuestWaiters = await startGuestWaiters(guest, [...EINTR_PRONE, ...RESTARTED]);
  const conn = guest.connection();
  const socket = `${deployed.dir}/agent.sock`;
  try {
    const before = await w.eintrs();
    const first = new SshTransport(conn, { agentCommand: presumedAgentCommand(conn), persistent: true, lingerSeconds: 60 });
    expect(resultOf<HostReport<ProcessResult>>(await first.run({ v: PROTOCOL_VERSION, op: "lock", args: { target: { pid: w.pid } } }, { timeoutMs: OP_TIMEOUT_MS }), first.where).processes[0].error).toBeUndefined();
    await closeAll();
    expect(await guest.check(`test -S ${socket} && echo socket`)).toContain("socket");
    // This transport's command would fail if it ran: only the socket can answer.
    const next = new SshTransport(conn, { agentCommand: "exit 97", persistent: true, lingerSeconds: 60, residentSockets: residentSocketGuesses(conn) });
    expect(resultOf<HostReport<ProcessResult>>(await next.run({ v: PROTOCOL_VERSION, op: "unlock", args: { target: { pid: w.pid } } }, { timeoutMs: OP_TIMEOUT_MS }), next.where).processes[0].error).toBeUndefined();
    expect(await unharmed(w.pid)).toEqual([]);
    expect(eintrDiff(await w.eintrs(), before)).toEqual({});
  } finally {
    await closeAll();
    // Without its socket the lingering agent leaves within a second.
    await guest.run(`rm -f ${socket}`);
    await w.stop();
  }
});
