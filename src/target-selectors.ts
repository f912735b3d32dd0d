// The ways to name a target process, in one table: the TargetSpec key, the CLI flag, the
// agent protocol's JSON schema and how a spec is described in messages all come from here.
// A new selector is one row here plus its resolution in target.ts.
import { MAX_CMDLINE_PATTERN_LENGTH, MAX_PATH_LENGTH } from "./inputBounds";
import { TargetSpec } from "./types";

const PATH_STRING = { type: "string", minLength: 1, maxLength: MAX_PATH_LENGTH, pattern: "^[^\\u0000]+$" } as const;

interface Selector {
  key: keyof TargetSpec & string;
  /** The CLI flag, its argument and its help line. */
  flag: string;
  flagArg: string;
  help: string;
  /** The agent protocol's JSON schema for the value. */
  schema: object;
  /** A spec with this selector, in words ("pid 42"). */
  describe: (value: unknown) => string;
}

export const TARGET_SELECTORS = [
  {
    key: "pid",
    flag: "--pid",
    flagArg: "<pid>",
    help: "process id",
    schema: { type: "integer", minimum: 1, maximum: 4194304 },
    describe: (v) => `pid ${String(v)}`,
  },
  {
    key: "pidFile",
    flag: "--pidfile",
    flagArg: "<path>",
    help: "file holding the process id",
    schema: PATH_STRING,
    describe: (v) => `pid file ${String(v)}`,
  },
  {
    key: "systemdUnit",
    flag: "--unit",
    flagArg: "<name>",
    help: "systemd unit (its MainPID)",
    schema: { type: "string", minLength: 1, maxLength: 256, pattern: "^[A-Za-z0-9:_.@\\\\-]+$" },
    describe: (v) => `systemd unit ${String(v)}`,
  },
  {
    key: "name",
    flag: "--name",
    flagArg: "<comm>",
    help: "process name, exact (as in /proc/PID/comm)",
    schema: { type: "string", minLength: 1, maxLength: 64, pattern: "^[^\\u0000/]+$" },
    describe: (v) => `process name ${JSON.stringify(v)}`,
  },
  {
    key: "cmdline",
    flag: "--cmdline",
    flagArg: "<regex>",
    help: "regular expression over the command line",
    schema: { type: "string", minLength: 1, maxLength: MAX_CMDLINE_PATTERN_LENGTH, pattern: "^[^\\u0000]+$" },
    describe: (v) => `command line /${String(v)}/`,
  },
] as const satisfies readonly Selector[];

export type TargetSelectorKey = (typeof TARGET_SELECTORS)[number]["key"];

/** A selector's CLI flag without "--" ("pidfile"): the name commander stores its value under. */
export type SelectorFlagName = (typeof TARGET_SELECTORS)[number]["flag"] extends `--${infer N}` ? N : never;

/** The flag name of a selector, as commander stores it. */
export function flagName(s: (typeof TARGET_SELECTORS)[number]): SelectorFlagName {
  return s.flag.slice(2) as SelectorFlagName;
}

export const SELECTOR_KEYS: readonly TargetSelectorKey[] = TARGET_SELECTORS.map((s) => s.key);

/** "pid, pidFile, systemdUnit, name, cmdline": for messages. */
export const SELECTOR_LIST = SELECTOR_KEYS.join(", ");

/** "--pid, --pidfile, --unit, --name, --cmdline": for the CLI's messages. */
export const SELECTOR_FLAG_LIST = TARGET_SELECTORS.map((s) => s.flag).join(", ");

/** The selectors a spec sets. */
export function selectorsGiven(spec: TargetSpec): TargetSelectorKey[] {
  return SELECTOR_KEYS.filter((k) => spec[k] !== undefined);
}

/** The spec in words, by its (first) selector. */
export function describeTargetSpec(spec: TargetSpec): string {
  const s = TARGET_SELECTORS.find((x) => spec[x.key] !== undefined);
  return s ? s.describe(spec[s.key]) : "no process";
}

/** The JSON schema of a TargetSpec (agent protocol). */
export function targetSpecSchema(): object {
  return {
    type: "object",
    additionalProperties: false,
    minProperties: 1,
    properties: {
      ...Object.fromEntries(TARGET_SELECTORS.map((s) => [s.key, s.schema])),
      match: { enum: ["one", "all"] },
    },
  };
}
