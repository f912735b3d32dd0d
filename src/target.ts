// Turning a TargetSpec into the processes it names, with their identity (pid + start time).
import { execFile } from "child_process";
import { promises as fs } from "fs";
import * as path from "path";
import { LockError, usageError } from "./errors";
import { pidFileWarnings, readPidFile } from "./pidfile";
import { cmdlinePatternProblem, compileCmdlinePattern } from "./cmdlinePattern";
import { MAX_CMDLINE_MATCHED_BYTES, MAX_PATH_LENGTH } from "./inputBounds";
import { DEFAULT_PROC_ROOT, isVanishedProcess, readProcFile, readProcFileHead } from "./proc/read";
import { isKernelThread, parseStat, PF_KTHREAD, ProcessStat } from "./proc/stat";
import { describeTargetSpec, SELECTOR_KEYS, SELECTOR_LIST, selectorsGiven } from "./target-selectors";
import { ProcessRef, TargetSpec } from "./types";

const KNOWN_FIELDS = new Set<string>([...SELECTOR_KEYS, "match"]);
/** TASK_COMM_LEN - 1: /proc/PID/comm never holds more, so a longer name can never match. */
const MAX_COMM_LENGTH = 15;


function nonEmptyString(value: unknown, field: string): LockError | undefined {
  if (typeof value !== "string") return usageError(field, `must be a string, got ${typeof value}`);
  if (value.trim() === "") return usageError(field, "must not be empty");
  return undefined;
}

/**
 * Checks a spec without touching the system. Returns the first problem as an EUSAGE
 * LockError naming the field (prefix + "." + key), or undefined when the spec is usable.
 */
export function validateTargetSpec(spec: TargetSpec, fieldPrefix = "target"): LockError | undefined {
  const field = (key: string): string => `${fieldPrefix}.${key}`;
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) {
    return usageError(fieldPrefix, `must be an object with one of ${SELECTOR_LIST}`);
  }
  // Specs arrive as JSON from the agent protocol and the provider: a misspelt key ("pidfile")
  // would otherwise silently fall through to "no selector given".
  const unknown = Object.keys(spec).find((key) => !KNOWN_FIELDS.has(key));
  if (unknown !== undefined) {
    return usageError(field(unknown), `unknown field; expected one of ${[...KNOWN_FIELDS].join(", ")}`);
  }
  const given = selectorsGiven(spec);
  if (given.length !== 1) {
    return usageError(
      fieldPrefix,
      given.length === 0
        ? `no process given: set exactly one of ${SELECTOR_LIST}`
        : `set exactly one of ${SELECTOR_LIST} (got ${given.join(" and ")})`,
    );
  }
  if (spec.pid !== undefined && (typeof spec.pid !== "number" || !Number.isSafeInteger(spec.pid) || spec.pid <= 0)) {
    return usageError(field("pid"), `must be a positive integer, got ${JSON.stringify(spec.pid)}`);
  }
  if (spec.pidFile !== undefined) {
    const problem = nonEmptyString(spec.pidFile, field("pidFile"));
    if (problem) return problem;
    if (spec.pidFile.length > MAX_PATH_LENGTH || spec.pidFile.includes("\0")) {
      return usageError(field("pidFile"), `must be a path of at most ${MAX_PATH_LENGTH} characters, without NUL`);
    }
  }
  if (spec.systemdUnit !== undefined) {
    const problem = nonEmptyString(spec.systemdUnit, field("systemdUnit"));
    if (problem) return problem;
  }
  if (spec.name !== undefined) {
    const problem = nonEmptyString(spec.name, field("name"));
    if (problem) return problem;
    if (spec.name.length > MAX_COMM_LENGTH) {
      return usageError(
        field("name"),
        `${JSON.stringify(spec.name)} is longer than ${MAX_COMM_LENGTH} characters, and the kernel keeps only the first ${MAX_COMM_LENGTH} in /proc/PID/comm`,
        `use name ${JSON.stringify(spec.name.slice(0, MAX_COMM_LENGTH))} or a cmdline regex`,
      );
    }
  }
  if (spec.cmdline !== undefined) {
    const problem = nonEmptyString(spec.cmdline, field("cmdline"));
    if (problem) return problem;
    const invalid = cmdlinePatternProblem(spec.cmdline, field("cmdline"));
    if (invalid) return invalid;
  }
  if (spec.match !== undefined && spec.match !== "one" && spec.match !== "all") {
    return usageError(field("match"), `must be "one" or "all", got ${JSON.stringify(spec.match)}`);
  }
  return undefined;
}

export interface ResolveOptions {
  /** Where procfs is mounted; tests point it at a fake tree. */
  procRoot?: string;
  /** The pid that must never be a target (lockmem itself). Default process.pid. */
  selfPid?: number;
  /** The systemctl binary. Default "systemctl" from PATH. */
  systemctl?: string;
}

/** Same process: pids are reused, (pid, start time) is not. */
export function sameProcess(a: Pick<ProcessRef, "pid" | "startTime">, b: Pick<ProcessRef, "pid" | "startTime">): boolean {
  return a.pid === b.pid && a.startTime === b.startTime;
}

/** /proc/PID/cmdline is NUL-separated (with a trailing NUL); we show and match it space-separated. */
export function joinCmdline(raw: string): string {
  return raw.split("\0").filter((arg, index, all) => !(arg === "" && index === all.length - 1)).join(" ");
}

interface ProcessFacts {
  ref: ProcessRef;
  stat: ProcessStat;
}

async function readFacts(pid: number, procRoot: string): Promise<ProcessFacts> {
  const stat = parseStat(await readProcFile(pid, "stat", procRoot));
  // Bounded: a command line can be megabytes, and every process's is read for a pattern.
  const cmdline = joinCmdline(await readProcFileHead(pid, "cmdline", MAX_CMDLINE_MATCHED_BYTES, procRoot));
  return { stat, ref: { pid, startTime: stat.startTime, comm: stat.comm, cmdline } };
}

/** Identity of one pid now; ENOTARGET when there is no such process. */
export async function readProcessRef(pid: number, procRoot: string = DEFAULT_PROC_ROOT): Promise<ProcessRef> {
  try {
    return (await readFacts(pid, procRoot)).ref;
  } catch (err) {
    if (isVanishedProcess(err)) {
      throw new LockError({ code: "ENOTARGET", pid, stage: "resolve", message: `no process with pid ${pid}` });
    }
    throw err;
  }
}

function cannotLockItself(field: string, pid: number): LockError {
  return usageError(field, `resolves to pid ${pid}, which is lockmem itself: lockmem cannot lock itself`);
}

async function resolveByPid(pid: number, field: string, how: string, o: Required<ResolveOptions>): Promise<ProcessRef> {
  if (pid === o.selfPid) throw cannotLockItself(field, pid);
  let facts: ProcessFacts;
  try {
    facts = await readFacts(pid, o.procRoot);
  } catch (err) {
    if (isVanishedProcess(err)) {
      throw new LockError({ code: "ENOTARGET", pid, stage: "resolve", message: `${how}: no process with pid ${pid}` });
    }
    throw err;
  }
  if ((facts.stat.flags & PF_KTHREAD) !== 0) {
    throw usageError(field, `pid ${pid} (${facts.ref.comm}) is a kernel thread: it has no user memory to lock`);
  }
  return facts.ref;
}

/** The pid in a pid file (read as systemd does, pidfile.ts), with warnings about who may write it. */
async function resolveByPidFile(pidFile: string, o: Required<ResolveOptions>): Promise<ProcessRef> {
  const read = await readPidFile(pidFile);
  const ref = await resolveByPid(read.pid, "target.pidFile", `pid file ${pidFile} (stale?)`, o);
  // /proc/PID belongs to the process's effective uid (root for a non-dumpable one).
  const owner = await fs.stat(path.join(o.procRoot, String(ref.pid))).then((st) => st.uid, () => undefined);
  const warnings = owner === undefined ? [] : pidFileWarnings(read, owner);
  return warnings.length > 0 ? { ...ref, warnings } : ref;
}

function runFile(file: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // execFile, never a shell: the unit name is user input.
    execFile(file, args, { timeout: 15000, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stdout, stderr }));
      else resolve({ stdout, stderr });
    });
  });
}

async function pidOfUnit(unit: string, systemctl: string): Promise<number> {
  const properties = ["MainPID", "LoadState", "ActiveState"];
  let stdout: string;
  try {
    ({ stdout } = await runFile(systemctl, ["show", ...properties.map((p) => `--property=${p}`), "--", unit]));
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT") {
      throw new LockError({
        code: "ENOTARGET",
        stage: "resolve",
        message: `cannot look up systemd unit ${unit}: ${systemctl} is not installed on this host`,
        hint: "use pid, pidFile, name or cmdline on hosts without systemd",
      });
    }
    const detail = (e.stderr ?? "").trim().split("\n")[0] || e.message;
    throw new LockError({
      code: "ENOTARGET",
      stage: "resolve",
      message: `cannot look up systemd unit ${unit}: systemctl failed: ${detail}`,
      hint: "is systemd the init system here? otherwise use pid, pidFile, name or cmdline",
    });
  }
  const values = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) values.set(line.slice(0, eq), line.slice(eq + 1).trim());
  }
  const mainPid = Number(values.get("MainPID"));
  if (!Number.isSafeInteger(mainPid) || mainPid < 0 || !values.has("MainPID")) {
    throw new LockError({ code: "EINTERNAL", stage: "resolve", message: `systemctl show ${unit}: no MainPID in ${JSON.stringify(stdout.slice(0, 200))}` });
  }
  if (mainPid === 0) {
    const loadState = values.get("LoadState");
    const activeState = values.get("ActiveState");
    const why =
      loadState === "not-found"
        ? "no such unit"
        : `it has no main process (LoadState=${loadState ?? "?"}, ActiveState=${activeState ?? "?"})`;
    throw new LockError({
      code: "ENOTARGET",
      stage: "resolve",
      message: `systemd unit ${unit} is not running: ${why}`,
      hint: "start the unit first; units of Type=oneshot or forking without PIDFile= have no MainPID",
    });
  }
  return mainPid;
}

/** All processes now, skipping those that exit while we read them. */
async function listProcesses(procRoot: string): Promise<ProcessFacts[]> {
  const entries = await fs.readdir(procRoot);
  const pids = entries.filter((entry) => /^\d+$/.test(entry)).map(Number).sort((a, b) => a - b);
  const facts = await Promise.all(
    pids.map(async (pid) => {
      try {
        return await readFacts(pid, procRoot);
      } catch (err) {
        if (isVanishedProcess(err) || (err instanceof LockError && err.code === "EPERM")) return undefined;
        throw err;
      }
    }),
  );
  return facts.filter((f): f is ProcessFacts => f !== undefined);
}

/** selfPid's parent, grandparent, ... up to init, from the listing we already have. */
function ancestorsOf(selfPid: number, all: ProcessFacts[]): Set<number> {
  const parentOf = new Map(all.map((f) => [f.ref.pid, f.stat.ppid]));
  const ancestors = new Set<number>();
  let pid = parentOf.get(selfPid);
  while (pid !== undefined && pid > 0 && !ancestors.has(pid)) {
    ancestors.add(pid);
    pid = parentOf.get(pid);
  }
  return ancestors;
}

async function resolveByPattern(spec: TargetSpec, o: Required<ResolveOptions>): Promise<ProcessRef[]> {
  const all = await listProcesses(o.procRoot);
  // A cmdline pattern also appears in the command line of the shell (or ssh, sudo, ...) that
  // started lockmem with it, so lockmem's own ancestors never match a cmdline regex.
  // Name matches keep them: comm holds no arguments.
  const skipped = spec.cmdline !== undefined ? ancestorsOf(o.selfPid, all) : new Set<number>();
  skipped.add(o.selfPid);
  const regex = spec.cmdline !== undefined ? compileCmdlinePattern(spec.cmdline) : undefined;
  const matches = (facts: ProcessFacts): boolean => {
    // Kernel threads have no memory of their own to lock; zombies have an empty cmdline too.
    if (isKernelThread(facts.stat) || facts.ref.cmdline === "") return false;
    if (regex) return regex.test(facts.ref.cmdline);
    return facts.ref.comm === spec.name;
  };
  return all.filter((f) => !skipped.has(f.ref.pid) && matches(f)).map((f) => f.ref);
}

function listForMessage(refs: ProcessRef[]): string {
  const shown = refs.slice(0, 20).map((r) => `  ${r.pid}: ${r.cmdline.length > 120 ? r.cmdline.slice(0, 117) + "..." : r.cmdline}`);
  if (refs.length > shown.length) shown.push(`  ... and ${refs.length - shown.length} more`);
  return shown.join("\n");
}

/**
 * The processes spec names, sorted by pid. Throws EUSAGE for a bad spec or for lockmem's own
 * pid, ENOTARGET when nothing matches, EAMBIGUOUS when several match and match is "one".
 */
export async function resolveTarget(spec: TargetSpec, opts: ResolveOptions = {}): Promise<ProcessRef[]> {
  const problem = validateTargetSpec(spec);
  if (problem) throw problem;
  const o: Required<ResolveOptions> = {
    procRoot: opts.procRoot ?? DEFAULT_PROC_ROOT,
    selfPid: opts.selfPid ?? process.pid,
    systemctl: opts.systemctl ?? "systemctl",
  };
  if (spec.pid !== undefined) return [await resolveByPid(spec.pid, "target.pid", "target.pid", o)];
  if (spec.pidFile !== undefined) {
    return [await resolveByPidFile(spec.pidFile, o)];
  }
  if (spec.systemdUnit !== undefined) {
    const pid = await pidOfUnit(spec.systemdUnit, o.systemctl);
    return [await resolveByPid(pid, "target.systemdUnit", `MainPID of ${spec.systemdUnit}`, o)];
  }
  const found = await resolveByPattern(spec, o);
  if (found.length === 0) {
    throw new LockError({
      code: "ENOTARGET",
      stage: "resolve",
      message: `no process matches ${describeTargetSpec(spec)}`,
      hint: spec.name !== undefined ? "name is compared exactly with /proc/PID/comm (see `ps -e -o comm`)" : undefined,
    });
  }
  if (found.length > 1 && (spec.match ?? "one") === "one") {
    throw new LockError({
      code: "EAMBIGUOUS",
      stage: "resolve",
      message: `${found.length} processes match ${describeTargetSpec(spec)}:\n${listForMessage(found)}`,
      hint: "use match: all / --all-matches or a narrower spec",
    });
  }
  return found;
}
