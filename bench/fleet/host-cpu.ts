// Host-side CPU of one Pulumi operation, two ways, both exact for what they cover:
// - per host, everything its sshd ran for us: the listener's own CPU plus cutime+cstime,
//   which the kernel adds up as each finished session (sshd's session processes, the
//   shell, our agent or the recipe's gdb, and their children) is reaped. The listener runs
//   as a child subreaper (subreaper.c), so a process that outlives its session is reaped by
//   it too; read once the listener has no descendant left, so nothing is missed;
// - the tool alone (our agent's node, the recipe's gdb): the sessions' PATH starts with a
//   folder holding a `node` and a `gdb` wrapper that run the real binary as a child and
//   then write bash's `times` (CPU of its finished children) into a log folder. The
//   wrapper itself (one bash, about a millisecond) is not counted; it exists only in the bench.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { SshFixture } from "../../tests/support/sshd";
import { waitUntil } from "../../tests/support/target";
import { packageRoot } from "../../provider/agent/bundle";

/** Clock ticks per second of the /proc/PID/stat CPU fields. */
export const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/** Fields 14-17 of /proc/PID/stat (utime, stime, cutime, cstime), in ms; undefined once gone. */
export function procCpuMs(pid: number | "self"): { own: number; children: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // comm (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
  const ms = (ticks: number): number => (ticks * 1000) / CLK_TCK;
  return { own: ms(f[11] + f[12]), children: ms(f[13] + f[14]) };
}

const SEARCH = ["/usr/local/bin", "/usr/bin", "/bin"];

function realBinary(name: string): string {
  for (const dir of SEARCH) {
    const file = path.join(dir, name);
    if (fs.existsSync(file)) return fs.realpathSync(file);
  }
  throw new Error(`${name} is not in ${SEARCH.join(", ")}: the bench needs it on the test hosts`);
}

/**
 * Writes the `node` and `gdb` wrappers into `binDir` (first on the sessions' PATH). A
 * node started with `-e` is our agent (the fixed bootstrap command line); any other node
 * run (the probe's `node -v`) is logged as node-other. Only builtins run between the
 * tool's end and `times`, so the log holds the tool's CPU and nothing else.
 */
export function installToolWrappers(binDir: string, logDir: string): void {
  fs.mkdirSync(logDir, { recursive: true });
  for (const tool of ["node", "gdb"]) {
    const kind = tool === "node" ? 'kind=other; [ "${1:-}" = "-e" ] && kind=agent' : "kind=run";
    const script = [
      "#!/bin/bash",
      `# bench:fleet: runs ${tool} as a child, then logs the CPU it used (bash \`times\`, second line).`,
      // A lingering agent outlives its session: measured live instead (lingeringCpu).
      tool === "node" ? `case " $* " in *" --linger="*) exec ${JSON.stringify(realBinary(tool))} "$@";; esac` : "",
      kind,
      `out=${JSON.stringify(logDir)}/${tool}-$kind.$$`,
      ': >"$out.running"',
      `${JSON.stringify(realBinary(tool))} "$@"`,
      "rc=$?",
      'times >"$out.tmp"',
      'mv -f "$out.tmp" "$out"; rm -f "$out.running"',
      "exit $rc",
      "",
    ].join("\n");
    fs.writeFileSync(path.join(binDir, tool), script, { mode: 0o755 });
  }
}

/** Compiles subreaper.c into `dir`; returns the launcher for startSshFixture. */
export function buildSubreaper(dir: string): string[] {
  const source = path.join(packageRoot(), "bench", "fleet", "subreaper.c");
  const binary = path.join(dir, "subreaper");
  execFileSync("gcc", ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", binary, source], { stdio: ["ignore", "pipe", "inherit"] });
  return [binary];
}

/** `times`' "0m0.120s" as ms. */
function timesMs(text: string): number {
  const m = /^(\d+)m([\d.]+)s$/.exec(text);
  if (!m) throw new Error(`unexpected \`times\` output: ${JSON.stringify(text)}`);
  return Number(m[1]) * 60_000 + Number(m[2]) * 1000;
}

export interface ToolRuns {
  runs: number;
  ms: number;
}

/** By kind ("node-agent", "node-other", "gdb-run"). */
export type ToolCpu = Record<string, { runs: number; ms: number }>;

function parseLog(file: string): number {
  const children = fs.readFileSync(file, "utf8").trim().split("\n")[1]?.split(/\s+/) ?? [];
  if (children.length !== 2) throw new Error(`${file}: unexpected \`times\` output`);
  return timesMs(children[0]) + timesMs(children[1]);
}

/** Waits for every wrapped tool to end, then sums and removes their logs. */
export async function takeToolCpu(logDir: string, what: string): Promise<ToolCpu> {
  await waitUntil(() => !fs.readdirSync(logDir).some((n) => n.endsWith(".running")), `every agent / gdb on the hosts to end after ${what}`, { timeoutMs: 60_000 });
  const out: ToolCpu = {};
  for (const name of fs.readdirSync(logDir)) {
    if (name.endsWith(".tmp") || name.endsWith(".running")) continue;
    const file = path.join(logDir, name);
    const t = (out[name.slice(0, name.lastIndexOf("."))] ??= { runs: 0, ms: 0 });
    t.runs++;
    t.ms += parseLog(file);
    fs.rmSync(file);
  }
  return out;
}

function argvOf(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return [];
  }
}

/** An agent run with --linger (agent.lingerSeconds), or its guardian stub (a fork of it). */
const isLingering = (argv: string[]): boolean => argv.some((a) => a.startsWith("--linger="));

/** Our lingering agents and their stubs whose agent folder lies under `agentBase`. */
export function lingeringAgents(agentBase: string): number[] {
  return fs
    .readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => {
      const argv = argvOf(pid);
      return isLingering(argv) && argv.some((a) => a.startsWith(agentBase + "/"));
    });
}

/** Per host: the lingering agents (and stubs) under its sshd. */
function lingeringOf(fx: SshFixture): number[][] {
  return fx.hosts.map((h) => h.sessionPids().filter((pid) => isLingering(argvOf(pid))));
}

/**
 * Waits until no host has a descendant left but lingering agents: the operation's plugins
 * closed their connections and every session and orphan has been reaped (zombies are
 * still listed).
 */
export async function sessionsEnded(fx: SshFixture, what: string): Promise<void> {
  const done = (): boolean => fx.hosts.every((h) => h.sessionPids().every((pid) => isLingering(argvOf(pid))));
  await waitUntil(done, `every sshd session to end after ${what}`, { timeoutMs: 60_000 });
}

/** Per host: the CPU so far of its lingering agents (their own and their reaped children's), in ms. */
export function lingeringCpu(fx: SshFixture): number[] {
  return lingeringOf(fx).map((pids) => pids.reduce((sum, pid) => {
    const c = procCpuMs(pid);
    return sum + (c ? c.own + c.children : 0);
  }, 0));
}

/** Per host: the listener's CPU plus that of every process it reaped so far, in ms. */
export function sshdCpu(fx: SshFixture): number[] {
  return fx.hosts.map((h) => {
    const c = procCpuMs(h.pid);
    if (!c) throw new Error(`sshd ${h.pid} on ${h.address} is gone`);
    return c.own + c.children;
  });
}
