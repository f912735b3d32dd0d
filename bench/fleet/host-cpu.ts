// Host-side CPU of one Pulumi operation, two ways, both exact for what they cover:
// - per host, everything its sshd ran for us: the listener's own CPU plus cutime+cstime,
//   which the kernel adds up as each finished session (sshd-session, the shell, our agent
//   or the recipe's gdb, and their children) is reaped. Read once every session of the
//   operation has ended, so nothing is still running and nothing is missed;
// - the tool alone (our agent's node, the recipe's gdb): the sessions' PATH starts with a
//   folder holding a `node` and a `gdb` wrapper that run the real binary as a child and
//   then write bash's `times` (CPU of its finished children) into a log folder. The
//   wrapper itself (one bash, about a millisecond) is not counted; it exists only in the bench.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { SshFixture } from "../../tests/support/sshd";
import { waitUntil } from "../../tests/support/target";

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
 * run (the probe's `node -v`) is logged as node-other. Each log holds `times`, the host
 * (the server address of SSH_CONNECTION) and whether the wrapper was orphaned: a tool that
 * outlives its session (sshd-session exits when the client closes the connection, and our
 * agent ends only on the EOF that follows) is reaped by init, so its CPU never reaches
 * sshd's cutime and has to be added. Only builtins run between the tool's end and `times`.
 */
export function installToolWrappers(binDir: string, logDir: string): void {
  fs.mkdirSync(logDir, { recursive: true });
  for (const tool of ["node", "gdb"]) {
    const kind = tool === "node" ? 'kind=other; [ "${1:-}" = "-e" ] && kind=agent' : "kind=run";
    const script = [
      "#!/bin/bash",
      `# bench:fleet: runs ${tool} as a child, then logs the CPU it used (bash \`times\`, second line).`,
      kind,
      `out=${JSON.stringify(logDir)}/${tool}-$kind.$$`,
      ': >"$out.running"',
      // Builtins only (no subshell: its CPU would count as the tool's); a function's
      // positional parameters are its own, so the tool's "$@" stays intact.
      "ppid() { local s; read -r s </proc/$$/stat; s=${s##*) }; set -- $s; pp=$2; }",
      "ppid; parent=$pp",
      `${JSON.stringify(realBinary(tool))} "$@"`,
      "rc=$?",
      // Reparented (to init or a subreaper) while the tool ran?
      'ppid; { times; echo "host ${SSH_CONNECTION:-? ? local ?}"; [ "$pp" = "$parent" ] && echo "orphan 0" || echo "orphan 1"; } >"$out.tmp"',
      'mv -f "$out.tmp" "$out"; rm -f "$out.running"',
      "exit $rc",
      "",
    ].join("\n");
    fs.writeFileSync(path.join(binDir, tool), script, { mode: 0o755 });
  }
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

export interface ToolCpu {
  /** By kind ("node-agent", "node-other", "gdb-run"). */
  kinds: Record<string, ToolRuns>;
  /** By host address: CPU of tools that outlived their session (not in sshd's cutime). */
  orphanedMs: Record<string, number>;
}

function parseLog(file: string): { ms: number; host: string; orphan: boolean } {
  const lines = fs.readFileSync(file, "utf8").trim().split("\n");
  const children = lines[1]?.split(/\s+/) ?? [];
  const host = /^host \S+ \S+ (\S+) /.exec(lines[2] ?? "")?.[1];
  const orphan = /^orphan ([01])$/.exec(lines[3] ?? "")?.[1];
  if (children.length !== 2 || !host || !orphan) throw new Error(`${file}: unexpected wrapper log ${JSON.stringify(lines)}`);
  return { ms: timesMs(children[0]) + timesMs(children[1]), host, orphan: orphan === "1" };
}

/** Waits for every wrapped tool to end, then sums and removes their logs. */
export async function takeToolCpu(logDir: string, what: string): Promise<ToolCpu> {
  await waitUntil(() => !fs.readdirSync(logDir).some((n) => n.endsWith(".running")), `every agent / gdb on the hosts to end after ${what}`, { timeoutMs: 60_000 });
  const out: ToolCpu = { kinds: {}, orphanedMs: {} };
  for (const name of fs.readdirSync(logDir)) {
    if (name.endsWith(".tmp")) continue;
    const file = path.join(logDir, name);
    const log = parseLog(file);
    const t = (out.kinds[name.slice(0, name.lastIndexOf("."))] ??= { runs: 0, ms: 0 });
    t.runs++;
    t.ms += log.ms;
    if (log.orphan) out.orphanedMs[log.host] = (out.orphanedMs[log.host] ?? 0) + log.ms;
    fs.rmSync(file);
  }
  return out;
}

/** Waits until no host has a session left (the operation's plugins closed their connections). */
export async function sessionsEnded(fx: SshFixture, what: string): Promise<void> {
  await waitUntil(() => fx.hosts.every((h) => h.sessionPids().length === 0), `every sshd session to end after ${what}`, { timeoutMs: 60_000 });
}

/**
 * Per host: the listener's CPU plus that of every session it reaped so far, in ms (add
 * ToolCpu.orphanedMs for the tools that outlived their sessions).
 */
export function sshdCpu(fx: SshFixture): number[] {
  return fx.hosts.map((h) => {
    const c = procCpuMs(h.pid);
    if (!c) throw new Error(`sshd ${h.pid} on ${h.address} is gone`);
    return c.own + c.children;
  });
}
