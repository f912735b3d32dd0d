// The command line's flags and what they become: the target (a TargetSpec, its flags from
// the selector table in src/target-selectors.ts), the mapping selection (a SelectionSpec)
// and the options the lock and unlock commands share.
import { Command } from "commander";
import { LockError } from "../errors";
import { flagName, SELECTOR_FLAG_LIST, SelectorFlagName, TARGET_SELECTORS } from "../target-selectors";
import { MappingKind, SelectionSpec, TargetSpec } from "../types";

/** Commander's values: one per selector flag (by its name without "--"), plus --all-matches. */
type TargetFlags = { [F in SelectorFlagName]?: string } & { allMatches?: boolean };

interface SelectionFlags {
  perms?: string;
  path?: string[];
  kind?: string;
  all?: boolean;
  allAccessible?: boolean;
}

export type CommonFlags = TargetFlags & SelectionFlags & {
  json?: boolean;
  future?: boolean;
  onFault?: boolean;
  raiseLimit?: boolean;
  dryRun?: boolean;
  allowSeccompSuspend?: boolean;
  maxPauseMs?: string;
  keepOnInterrupt?: boolean;
};

export function maxPauseOf(flags: CommonFlags): number | undefined {
  if (flags.maxPauseMs === undefined) return undefined;
  const v = Number(flags.maxPauseMs);
  if (!Number.isFinite(v) || v < 0.1 || v > 60000) {
    throw new LockError({ code: "EUSAGE", field: "--max-pause-ms", message: `--max-pause-ms: ${JSON.stringify(flags.maxPauseMs)} is not a number of milliseconds between 0.1 and 60000` });
  }
  return v;
}

/** The value of a pid flag (`flag` names it in the error). */
export function pidOf(flag: string, value: string): number {
  if (!/^\d+$/.test(value)) throw new LockError({ code: "EUSAGE", field: flag, message: `${flag}: ${JSON.stringify(value)} is not a pid` });
  return Number(value);
}

function list(value: string): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

export function targetOf(flags: TargetFlags): TargetSpec {
  const spec: TargetSpec = {};
  for (const s of TARGET_SELECTORS) {
    const value = flags[flagName(s)];
    if (value === undefined) continue;
    if (s.key === "pid") {
      spec.pid = pidOf(s.flag, value);
    } else {
      spec[s.key] = value;
    }
  }
  if (flags.allMatches) spec.match = "all";
  if (Object.keys(spec).filter((k) => k !== "match").length === 0) {
    throw new LockError({ code: "EUSAGE", field: "target", message: `no target: give one of ${SELECTOR_FLAG_LIST}` });
  }
  return spec;
}

export function selectionOf(flags: SelectionFlags): SelectionSpec | undefined {
  const spec: SelectionSpec = {};
  if (flags.perms !== undefined) spec.permissions = list(flags.perms);
  if (flags.path !== undefined && flags.path.length > 0) spec.paths = flags.path;
  if (flags.kind !== undefined) spec.kinds = list(flags.kind) as MappingKind[];
  if (flags.all) spec.all = true;
  if (flags.allAccessible) spec.allAccessible = true;
  return Object.keys(spec).length === 0 ? undefined : spec;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function addTargetOptions(cmd: Command): Command {
  for (const s of TARGET_SELECTORS) cmd.option(`${s.flag} ${s.flagArg}`, s.help);
  return cmd.option("--all-matches", "act on every matching process (otherwise several matches are an error)");
}

function addSelectionOptions(cmd: Command): Command {
  return cmd
    .option("--perms <list>", "permissions, e.g. r-x,rwx (default r-x,rwx)")
    .option("--path <glob>", "mapping path glob (repeatable)", collect)
    .option("--kind <list>", "kinds: file,anon,heap,stack,shmem")
    .option("--all", "every mapping (mlockall / munlockall); the kernel marks PROT_NONE reservations locked too")
    .option("--all-accessible", "every accessible mapping, one mlock2 / munlock per range (reservations stay unlocked)");
}

/** An option as commander takes it: flags and help text. */
export type OptionText = readonly [flags: string, help: string];

/** The options more than one command has, each said once. */
export const SHARED_OPTIONS = {
  json: ["--json", "one JSON object on stdout"],
  maxPause: ["--max-pause-ms <ms>", "split the work so that no single stop of the target exceeds this"],
  allowSeccompSuspend: ["--allow-seccomp-suspend", "suspend the target's seccomp filter for lockmem's calls only"],
  dryRun: ["--dry-run", "show the plan, change nothing"],
} as const satisfies Record<string, OptionText>;

/** `cmd` with `options` added, in their order (the order `--help` lists them in). */
export function withOptions(cmd: Command, options: OptionText[]): Command {
  for (const [flags, help] of options) cmd.option(flags, help);
  return cmd;
}

/** A subcommand that acts on a target and a selection of its mappings: their flags added. */
export function targetCommand(program: Command, name: string, description: string): Command {
  return addSelectionOptions(addTargetOptions(program.command(name).description(description)));
}
