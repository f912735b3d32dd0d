// `npm run bench:fleet`: `pulumi up`, `preview` and `destroy` of LockedProcessMemory over
// a fleet (default 10 sshd hosts x 2 targets, 64 MiB resident each) against the recipe
// users reach for today: one resource per target that dials a new SSH connection and runs
// `gdb -p PID -batch -ex 'call (int)mlockall(3)'` (munlockall on delete), as
// @pulumi/command's remote.Command does. Same run, same targets, the real engine.
// Prints wall-time ratios and the longest stall any target's heartbeat saw, and as a
// reference the engine alone: the same number of dynamic resources that do nothing.
//
// Both lock the same thing: every mapping, current and future (mlockall(MCL_CURRENT |
// MCL_FUTURE) = 3, i.e. mappings { all: true }, future: true).
//
// Needs root, openssh-server, gdb and `source scripts/toolchain.sh` (Node >= 22, pulumi).
// Knobs: BENCH_HOSTS (10), BENCH_TARGETS_PER_HOST (2), BENCH_ANON_MB (64), BENCH_ROUNDS (1),
// BENCH_HEARTBEAT_US (1000), BENCH_PARALLEL (unset: the CLI's default, 4 per CPU).
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory } from "../provider";
import { closeAll } from "../provider/transport/ssh";
import { SshFixture, startSshFixture } from "../tests/support/sshd";
import { TestStack, withStack } from "../tests/support/stack";
import { Target, startTarget, stopAllTargets } from "../tests/support/target";
import { packageRoot } from "../provider/agent/bundle";
import { trace } from "../provider/trace";
import { envInt } from "./env";
import { median } from "./measure";


const HOSTS = envInt("BENCH_HOSTS", 10);
const PER_HOST = envInt("BENCH_TARGETS_PER_HOST", 2);
const ANON_MB = envInt("BENCH_ANON_MB", 64);
const ROUNDS = envInt("BENCH_ROUNDS", 1);
/** Sleep between heartbeats: 20 targets beating every 100 us would starve 2 cores by themselves. */
const HEARTBEAT_US = envInt("BENCH_HEARTBEAT_US", 1000);
/** `--parallel` for every approach alike; unset: the CLI's default (4 per CPU). */
const PARALLEL = process.env.BENCH_PARALLEL ? envInt("BENCH_PARALLEL", 1) : undefined;
const GOAL_UP = 3;
const GOAL_STALL = 10;

// ---------------------------------------------------------------- the gdb recipe

interface GdbInputs {
  host: string;
  port: number;
  privateKey: string;
  hostKey: string;
  pid: number;
}

/**
 * One fresh SSH connection per call, one command, then close: what remote.Command does.
 * Serialized into the gdb resources' provider, so it uses only `require`.
 */
async function runOverNewConnection(i: GdbInputs, command: string): Promise<string> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Client } = require("ssh2") as typeof import("ssh2");
  const expected = Buffer.from(i.hostKey.split(" ")[1], "base64");
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.on("error", reject);
    c.on("ready", () => {
      c.exec(command, (err, stream) => {
        if (err) return reject(err);
        let out = "";
        stream.on("data", (d: Buffer) => (out += d.toString()));
        stream.stderr.on("data", (d: Buffer) => (out += d.toString()));
        stream.on("close", (code: number) => {
          c.end();
          if (code !== 0 || !/^\$1 = 0$/m.test(out)) reject(new Error(`${command} on ${i.host}: exit ${code}: ${out}`));
          else resolve(out);
        });
      });
    });
    c.connect({ host: i.host, port: i.port, username: "root", privateKey: i.privateKey, hostVerifier: (key: Buffer) => key.equals(expected) });
  });
}

const gdbProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: GdbInputs) {
    await runOverNewConnection(inputs, `DEBUGINFOD_URLS= gdb -p ${inputs.pid} -batch -ex 'call (int)mlockall(3)'`);
    return { id: `gdb-${inputs.host}-${inputs.pid}`, outs: inputs };
  },
  async delete(_id: string, props: GdbInputs) {
    await runOverNewConnection(props, `DEBUGINFOD_URLS= gdb -p ${props.pid} -batch -ex 'call (int)munlockall()'`);
  },
};

class GdbLock extends pulumi.dynamic.Resource {
  constructor(name: string, args: GdbInputs) {
    super(gdbProvider, name, { ...args, privateKey: pulumi.secret(args.privateKey) }, { additionalSecretOutputs: ["privateKey"] });
  }
}

// ---------------------------------------------------------------- the engine alone

/**
 * The same inputs as the recipe's (a secret key included), and nothing done: what the
 * engine, the dynamic-provider plugin and the Automation API cost by themselves for this
 * many resources. Neither approach can be faster than this; it is printed as a reference.
 */
const noopProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: GdbInputs) {
    return { id: `noop-${inputs.host}-${inputs.pid}`, outs: inputs };
  },
  async delete() {
    return;
  },
};

class NoopLock extends pulumi.dynamic.Resource {
  constructor(name: string, args: GdbInputs) {
    super(noopProvider, name, { ...args, privateKey: pulumi.secret(args.privateKey) }, { additionalSecretOutputs: ["privateKey"] });
  }
}

// ---------------------------------------------------------------- measuring

type Approach = "lockmem" | "gdb" | "engine";
type Phase = "up" | "preview" | "destroy";

interface Fleet {
  fx: SshFixture;
  targets: { host: number; target: Target }[];
}

function program(approach: Approach, fleet: Fleet) {
  return async () => {
    fleet.targets.forEach(({ host, target }, n) => {
      const h = fleet.fx.hosts[host];
      if (approach === "lockmem") {
        new LockedProcessMemory(`t${n}`, {
          connection: { host: h.address, port: h.port, user: "root", privateKey: fleet.fx.userKey.privateKey, hostKey: h.hostKey },
          target: { pid: target.pid },
          mappings: { all: true },
          future: true,
        });
      } else {
        const args = { host: h.address, port: h.port, privateKey: fleet.fx.userKey.privateKey, hostKey: h.hostKey, pid: target.pid };
        if (approach === "gdb") new GdbLock(`t${n}`, args);
        else new NoopLock(`t${n}`, args);
      }
    });
    return {};
  };
}

interface Took {
  /** The Automation API call, start to finish. */
  all: number;
  /** Until the CLI printed its last output (its summary, just before it exits). */
  cli: number;
}

async function timed(label: string, fn: (onOutput: () => void) => Promise<unknown>): Promise<Took> {
  const t0 = process.hrtime.bigint();
  let last = t0;
  trace("bench-start", label);
  await fn(() => (last = process.hrtime.bigint()));
  const end = process.hrtime.bigint();
  trace("bench-end", label);
  return { all: Number(end - t0) / 1e6, cli: Number(last - t0) / 1e6 };
}

async function resetStalls(fleet: Fleet): Promise<void> {
  await Promise.all(fleet.targets.map(({ target }) => target.resetStall()));
}

/** Longest heartbeat stall (us) over every target since the last reset. */
async function maxStall(fleet: Fleet): Promise<number[]> {
  return Promise.all(
    fleet.targets.map(async ({ target }) => {
      const first = await target.stats();
      const s = await target.waitForStats((x) => x.heartbeat.iterations > first.heartbeat.iterations + 1, "two heartbeats");
      return s.heartbeat.max_stall_us;
    }),
  );
}

function lockedAll(fleet: Fleet, expectLocked: boolean): void {
  for (const { target } of fleet.targets) {
    const vmLck = Number(/^VmLck:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${target.pid}/status`, "utf8"))?.[1] ?? 0);
    const ok = expectLocked ? vmLck >= ANON_MB * 1024 : vmLck === 0;
    if (!ok) throw new Error(`target ${target.pid}: VmLck ${vmLck} kB, expected ${expectLocked ? `>= ${ANON_MB * 1024}` : 0}`);
  }
}

type Timings = { ms: Record<Phase, number>; cli: Record<Phase, number> };

async function oneApproach(approach: Approach, fleet: Fleet, workDir: string): Promise<Timings & { stalls: number[] }> {
  const p = program(approach, fleet);
  return withStack(
    p,
    async (s: TestStack) => {
      const t = { ms: {}, cli: {} } as Timings;
      const record = (ph: Phase, took: Took): void => {
        t.ms[ph] = took.all;
        t.cli[ph] = took.cli;
      };
      const up = (): Promise<Took> => timed(`${approach} up`, (onOutput) => s.up({ program: p, parallel: PARALLEL, onOutput }));
      const preview = (): Promise<Took> => timed(`${approach} preview`, (onOutput) => s.preview({ program: p, expectNoChanges: true, parallel: PARALLEL, onOutput }));
      const destroy = (): Promise<Took> => timed(`${approach} destroy`, (onOutput) => s.destroy({ parallel: PARALLEL, onOutput }));
      await resetStalls(fleet);
      record("up", await up());
      if (approach === "engine") {
        record("preview", await preview());
        record("destroy", await destroy());
        return { ...t, stalls: [] };
      }
      lockedAll(fleet, true);
      const upStalls = await maxStall(fleet);
      record("preview", await preview());
      await resetStalls(fleet);
      record("destroy", await destroy());
      lockedAll(fleet, false);
      const downStalls = await maxStall(fleet);
      return { ...t, stalls: upStalls.map((u, i) => Math.max(u, downStalls[i])) };
    },
    { workDir },
  );
}

type Results = Record<Approach, { ms: Record<Phase, number>[]; cli: Record<Phase, number>[]; stalls: number[] }>;

/** Every approach, ROUNDS times, alternating their order from round to round. */
async function measureRounds(fleet: Fleet, workDir: string): Promise<Results> {
  const results: Results = {
    lockmem: { ms: [], cli: [], stalls: [] },
    gdb: { ms: [], cli: [], stalls: [] },
    engine: { ms: [], cli: [], stalls: [] },
  };
  for (let round = 0; round < ROUNDS; round++) {
    for (const approach of (round % 2 === 0 ? ["lockmem", "gdb", "engine"] : ["engine", "gdb", "lockmem"]) as Approach[]) {
      const r = await oneApproach(approach, fleet, workDir);
      results[approach].ms.push(r.ms);
      results[approach].cli.push(r.cli);
      results[approach].stalls.push(...r.stalls);
      const stall = approach === "engine" ? "" : `, longest stall ${(Math.max(...r.stalls) / 1000).toFixed(1)} ms`;
      console.log(`round ${round + 1} ${approach.padEnd(7)}: up ${r.ms.up.toFixed(0)} ms, preview ${r.ms.preview.toFixed(0)} ms, destroy ${r.ms.destroy.toFixed(0)} ms${stall}`);
    }
  }
  return results;
}

function report(results: Results, firstUp: number): void {
  const med = (a: Approach, ph: Phase, of: "ms" | "cli" = "ms"): number => median(results[a][of].map((m) => m[ph]));
  console.log(`\nbench:fleet: ${HOSTS} hosts x ${PER_HOST} targets (${ANON_MB} MiB resident each, heartbeat every ${HEARTBEAT_US} us), real sshd on 127.0.0.x, real Pulumi engine (parallel ${PARALLEL ?? `default: ${4 * os.cpus().length}`}), ${ROUNDS} round(s)`);
  console.log(`(first lockmem up/preview/destroy cycle, agent upload included: ${firstUp.toFixed(0)} ms)`);
  const table = (of: "ms" | "cli"): void => {
    console.log("phase     lockmem ms   gdb recipe ms   gdb/lockmem   engine alone ms   gdb/lockmem above the engine");
    for (const ph of ["up", "preview", "destroy"] as Phase[]) {
      const [l, g, e] = [med("lockmem", ph, of), med("gdb", ph, of), med("engine", ph, of)];
      const above = l > e && g > e ? `${((g - e) / (l - e)).toFixed(2)}x` : "-";
      console.log(`${ph.padEnd(9)} ${l.toFixed(0).padStart(10)}   ${g.toFixed(0).padStart(13)}   ${(g / l).toFixed(2).padStart(10)}x   ${e.toFixed(0).padStart(15)}   ${above.padStart(29)}`);
    }
  };
  table("ms");
  console.log(`(engine alone: the same ${HOSTS * PER_HOST} dynamic resources with the recipe's inputs, doing nothing; neither approach can beat it)`);
  console.log("the same, until the CLI printed its summary (without the Automation API's reading of outputs and history afterwards):");
  table("cli");
  const lm = Math.max(...results.lockmem.stalls);
  const gd = Math.max(...results.gdb.stalls);
  console.log(`target stall (us, over every target, up and destroy): lockmem median ${median(results.lockmem.stalls).toFixed(0)} max ${lm}; gdb recipe median ${median(results.gdb.stalls).toFixed(0)} max ${gd}`);
  const upRatio = med("gdb", "up") / med("lockmem", "up");
  const stallRatio = gd / Math.max(lm, 1);
  console.log(`up: ${upRatio.toFixed(2)}x faster than the recipe (goal >= ${GOAL_UP}x) ${upRatio >= GOAL_UP ? "MET" : "NOT MET"}`);
  console.log(`longest stall: ${stallRatio.toFixed(1)}x shorter (goal >= ${GOAL_STALL}x) ${stallRatio >= GOAL_STALL ? "MET" : "NOT MET"}`);
}

async function main(): Promise<void> {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-bench-fleet-"));
  fs.mkdirSync(path.join(scratch, "bin"));
  // The provider loads its implementation by package name: run the stacks from inside the package.
  const workBase = path.join(packageRoot(), "dist", "bench-stacks");
  fs.mkdirSync(workBase, { recursive: true });
  const workDir = fs.mkdtempSync(path.join(workBase, "fleet-"));
  const fx = await startSshFixture({ hosts: HOSTS, firstOctet: 200, agentBinDir: path.join(scratch, "bin"), agentWrapper: "/nonexistent/lockmem" });
  try {
    const targets: Fleet["targets"] = [];
    for (let h = 0; h < HOSTS; h++) {
      for (let k = 0; k < PER_HOST; k++) targets.push({ host: h, target: await startTarget({ mode: "heartbeat", heartbeatUs: HEARTBEAT_US, anonMb: ANON_MB, readyTimeoutMs: 60_000 }) });
    }
    const fleet: Fleet = { fx, targets };
    // Deploy the agent once so that every measured lockmem round is a steady-state one
    // (the first `up` on a fresh host also uploads the bundle: reported separately).
    const firstUp = (await timed("lockmem first cycle", () => oneApproach("lockmem", fleet, workDir))).all;
    report(await measureRounds(fleet, workDir), firstUp);
  } finally {
    await closeAll();
    await fx.stop();
    await stopAllTargets();
    fs.rmSync(workDir, { recursive: true, force: true });
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
