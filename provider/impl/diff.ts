// `diff`: compares what the last operation or `read` recorded (olds: the outputs) with the
// desired inputs, so that drift found by `pulumi refresh` shows in `preview` and `up`
// repairs it. Pure functions over state.
import { effectiveSelection } from "../../src/select";
import { SelectionSpec, TargetSpec } from "../../src/types";
import { ProviderInputs, ProviderOutputs } from "./state";
import { transportFor } from "../transport";

export interface DiffOutcome {
  changes: boolean;
  /** Properties whose change needs a new resource. */
  replaces: string[];
  /** Properties that changed (replaces included), and "processes" for drift. */
  changed: string[];
  /**
   * Always: the replacement locks the same kind of memory of the same host, and an old
   * resource deleted after it would unlock what the new one just locked.
   */
  deleteBeforeReplace: true;
}

/** Stable JSON: keys sorted, undefined dropped. */
export function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function targetIdentity(t: TargetSpec | undefined): string {
  return canonical({ ...t, match: t?.match ?? "one" });
}

function selectionIdentity(m: SelectionSpec | undefined): string {
  const s = effectiveSelection(m);
  if (s.all === true) return canonical({ all: true });
  if (s.allAccessible === true) return canonical({ allAccessible: true });
  return canonical({ ...s, all: undefined, allAccessible: undefined, permissions: s.permissions ? [...s.permissions].sort() : undefined });
}

const flag = (v: boolean | undefined): boolean => v === true;

export function diffState(olds: ProviderOutputs, news: ProviderInputs): DiffOutcome {
  const replaces: string[] = [];
  const changed: string[] = [];
  // Another machine means other processes: a new resource.
  if (transportFor(olds.connection).machine() !== transportFor(news.connection).machine()) replaces.push("connection");
  if (targetIdentity(olds.target) !== targetIdentity(news.target)) replaces.push("target");
  changed.push(...replaces);
  if (!replaces.includes("connection") && canonical(olds.connection ?? null) !== canonical(news.connection ?? null)) changed.push("connection");
  if (selectionIdentity(olds.mappings) !== selectionIdentity(news.mappings)) changed.push("mappings");
  for (const key of ["future", "onFault", "raiseMemlockLimit"] as const) {
    if (flag(olds[key]) !== flag(news[key])) changed.push(key);
  }
  if (canonical(olds.agent ?? {}) !== canonical(news.agent ?? {})) changed.push("agent");
  // Drift recorded by the last read: a restarted target, memory unlocked behind our back,
  // new unlocked mappings that match, a limit changed. `inSync` absent: state of an
  // operation that never finished; treat it as drift too.
  if (olds.inSync !== true) changed.push("processes");
  return { changes: changed.length > 0, replaces, changed, deleteBeforeReplace: true };
}
