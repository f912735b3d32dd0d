// Which mappings a SelectionSpec chooses, and which of those the kernel cannot lock.
import { LockError, usageError } from "./errors";
import { MAX_PATH_GLOBS, MAX_PATH_LENGTH } from "./inputBounds";
import { compilePathGlob, PathGlob } from "./pathGlob";
import { pathWithoutDeleted } from "./proc/smaps";
import { Mapping, MAPPING_KINDS, MappingKind, SelectionSpec } from "./types";

/** As Solaris' tool did: code (r-x) and writable code (rwx, JIT). */
export const defaultSelection: SelectionSpec = { permissions: ["r-x", "rwx"] };

/**
 * The selection that applies: the spec, or defaultSelection when it names no criterion
 * (absent, `{}`, or only `all: false` / `allAccessible: false`). The one place the default
 * is decided: the operations, the planner and the provider's diff all ask here.
 */
export function effectiveSelection(spec: SelectionSpec | undefined): SelectionSpec {
  const criterion =
    spec !== undefined &&
    (spec.all === true || spec.allAccessible === true || spec.permissions !== undefined || spec.paths !== undefined || spec.kinds !== undefined);
  return criterion ? spec : defaultSelection;
}

const KNOWN_FIELDS = new Set<string>(["permissions", "paths", "kinds", "all", "allAccessible"]);
const PERMISSION = /^[r-][w-][x-][ps]?$/;

/**
 * minimatch accepts almost any string, silently reading a typo as a pattern that matches
 * nothing; these are the mistakes we can name.
 */
function globProblem(pattern: string): string | undefined {
  if (pattern === "") return "must not be empty";
  if (pattern.includes("/") && !pattern.startsWith("/") && !pattern.startsWith("*")) {
    return `${JSON.stringify(pattern)} contains a '/' but does not start with '/' or '**/': it is matched against absolute paths and would match nothing`;
  }
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === "\\") {
      i++;
      continue;
    }
    if (pattern[i] !== "[") continue;
    // A class ends at the first ']' after at least one character ("[]a]" holds ']').
    const close = pattern.indexOf("]", i + 2);
    if (close < 0) return `${JSON.stringify(pattern)} has an unclosed '[' (write \\[ for a literal bracket, e.g. \\[heap\\])`;
    const body = pattern.slice(i + 1, close).replace(/^[!^]/, "");
    for (const range of body.matchAll(/(.)-(.)/g)) {
      if (range[1] > range[2]) return `${JSON.stringify(pattern)} has a reversed range ${range[0]}`;
    }
    i = close;
  }
  const compiled = compilePathGlob(pattern);
  return typeof compiled === "string" ? compiled : undefined;
}

function listProblem(value: unknown, field: string): LockError | undefined {
  if (!Array.isArray(value)) return usageError(field, "must be a list");
  if (value.length === 0) return usageError(field, "an empty list selects nothing; leave the field out instead");
  const notString = value.findIndex((item) => typeof item !== "string");
  if (notString >= 0) return usageError(`${field}[${notString}]`, "must be a string");
  return undefined;
}

/**
 * Checks a selection without touching the system; the first problem as an EUSAGE LockError
 * naming the field, or undefined.
 *
 * How fields combine: each given criterion filters, so a mapping is selected when it
 * matches ALL given criteria (permissions AND paths AND kinds) and, within one list, ANY
 * entry (e.g. "r-x" OR "rwx"). With no criterion at all, defaultSelection applies.
 * `all: true` means every mapping (mlockall / munlockall) and may not be combined with
 * criteria, since the kernel call would lock more than they say. `allAccessible: true` means
 * every mapping the process can access, locked one by one (mlock2): PROT_NONE reservations,
 * which mlockall marks locked too, stay out.
 */
export function validateSelection(spec: SelectionSpec, fieldPrefix = "mappings"): LockError | undefined {
  const field = (key: string): string => `${fieldPrefix}.${key}`;
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) {
    return usageError(fieldPrefix, "must be an object with permissions, paths, kinds or all");
  }
  const unknown = Object.keys(spec).find((key) => !KNOWN_FIELDS.has(key));
  if (unknown !== undefined) return usageError(field(unknown), `unknown field; expected one of ${[...KNOWN_FIELDS].join(", ")}`);
  if (spec.all !== undefined && typeof spec.all !== "boolean") return usageError(field("all"), "must be true or false");
  if (spec.allAccessible !== undefined && typeof spec.allAccessible !== "boolean") return usageError(field("allAccessible"), "must be true or false");
  return (
    combinationProblem(spec, field) ??
    (spec.permissions === undefined
      ? undefined
      : entriesProblem(
          spec.permissions,
          field("permissions"),
          (perm) => PERMISSION.test(perm),
          (perm) => `${JSON.stringify(perm)} is not a permission string like "r-x", "rw-" or "r-xp"`,
          "three letters r/-, w/-, x/- in that order, optionally followed by p (private) or s (shared)",
        )) ??
    (spec.paths === undefined ? undefined : pathsProblem(spec.paths, field("paths"))) ??
    (spec.kinds === undefined
      ? undefined
      : entriesProblem(spec.kinds, field("kinds"), (kind) => MAPPING_KINDS.includes(kind as MappingKind), (kind) => `unknown kind ${JSON.stringify(kind)}; known: ${MAPPING_KINDS.join(", ")}`))
  );
}

/** `all` and `allAccessible` each stand alone: the kernel call would lock more than criteria say. */
function combinationProblem(spec: SelectionSpec, field: (key: string) => string): LockError | undefined {
  if (spec.allAccessible === true) {
    const combined = (["all", "permissions", "paths", "kinds"] as const).filter((key) => spec[key] !== undefined && spec[key] !== false);
    if (combined.length > 0) {
      return usageError(
        field("allAccessible"),
        `allAccessible locks every accessible mapping and cannot be combined with ${combined.join(", ")}`,
        "drop allAccessible to lock only the matching mappings (or all for mlockall), or drop the other fields",
      );
    }
  }
  if (spec.all === true) {
    const combined = (["permissions", "paths", "kinds"] as const).filter((key) => spec[key] !== undefined);
    if (combined.length > 0) {
      return usageError(
        field("all"),
        `all locks every mapping (mlockall) and cannot be combined with ${combined.join(", ")}`,
        "drop all to lock only the matching mappings, or drop the other fields",
      );
    }
  }
  return undefined;
}

/** A list field's problem: not a list of strings, or its first entry that `valid` refuses. */
function entriesProblem(list: string[], field: string, valid: (entry: string) => boolean, invalid: (entry: string) => string, hint?: string): LockError | undefined {
  const problem = listProblem(list, field);
  if (problem) return problem;
  const bad = list.findIndex((entry) => !valid(entry));
  return bad < 0 ? undefined : usageError(`${field}[${bad}]`, invalid(list[bad]), hint);
}

function pathsProblem(paths: string[], field: string): LockError | undefined {
  const problem = listProblem(paths, field);
  if (problem) return problem;
  // Each glob is matched against every mapping of every target: the count and length bound the work.
  if (paths.length > MAX_PATH_GLOBS) {
    return usageError(field, `has ${paths.length} globs; the limit is ${MAX_PATH_GLOBS}`, "combine them with braces, e.g. /usr/lib/{liba,libb}*.so*");
  }
  const long = paths.findIndex((glob) => glob.length > MAX_PATH_LENGTH);
  if (long >= 0) return usageError(`${field}[${long}]`, `is ${paths[long].length} characters long; the limit is ${MAX_PATH_LENGTH} (PATH_MAX)`);
  for (let i = 0; i < paths.length; i++) {
    const globError = globProblem(paths[i]);
    if (globError) return usageError(`${field}[${i}]`, globError);
  }
  return undefined;
}

/** VmFlags `lo`: the VMA is mlocked (VM_LOCKED). */
export function isLocked(mapping: Pick<Mapping, "vmFlags">): boolean {
  return mapping.vmFlags.includes("lo");
}

// smaps names VM_LOCKONFAULT (bit 19) `lf` only since Linux 6.2; before, it has no name and
// shows as `??` (5.10 and 6.1 do, as tests/guest shows). The kernel prints the flags in bit
// order and every bit from 14 to 18 has had a name all along, so a `??` that follows `lo`
// (bit 13) with only those between is bit 19. Another unnamed bit elsewhere is not read as it.
const NAMED_BITS_14_TO_18 = new Set(["io", "sr", "rr", "dc", "de"]);

/** VmFlags `lf` (or its unnamed `??` before 6.2): locked on fault only (VM_LOCKONFAULT); not-yet-touched pages stay out of RAM. */
export function isLockOnFault(mapping: Pick<Mapping, "vmFlags">): boolean {
  const flags = mapping.vmFlags;
  if (flags.includes("lf")) return true;
  for (let i = flags.indexOf("lo") + 1; i > 0 && i < flags.length; i++) {
    if (flags[i] === "??") return true;
    if (!NAMED_BITS_14_TO_18.has(flags[i])) return false;
  }
  return false;
}

// mm/mlock.c (mlock_fixup) leaves VM_SPECIAL (io, de, pf, mm in VmFlags) and hugetlb (ht) VMAs
// alone: the call succeeds but the VMA is never marked locked.
const UNLOCKABLE_FLAGS: Record<string, string> = {
  io: "a device I/O mapping (VmFlags io)",
  pf: "a raw page-frame mapping (VmFlags pf)",
  mm: "a mixed page-frame mapping (VmFlags mm)",
  de: "a special mapping that cannot grow (VmFlags de, e.g. a driver buffer)",
  ht: "a hugetlb mapping (VmFlags ht), whose pages are never swapped anyway",
};

/** Why the kernel will not lock this mapping, or undefined when it will. */
export function notLockableReason(mapping: Mapping): string | undefined {
  if (mapping.perms.startsWith("---")) {
    return "PROT_NONE (no access): mlock fails with ENOMEM and would leave the range marked locked";
  }
  if (mapping.kind === "vdso" || mapping.kind === "vvar") {
    return `${mapping.path} is a kernel-provided page: mlock reports success but it stays unlocked`;
  }
  if (mapping.kind === "vsyscall") return "[vsyscall] lies outside the process's address space: mlock fails with ENOMEM";
  for (const flag of mapping.vmFlags) {
    const special = UNLOCKABLE_FLAGS[flag];
    if (special) return `${special}: the kernel does not lock it`;
  }
  return undefined;
}

/**
 * mlockall(MCL_CURRENT) marks this VMA locked (VmLck counts it): every lockable mapping, and
 * PROT_NONE reservations too (mm/mlock.c apply_mlockall_flags -> mlock_fixup skips only
 * VM_SPECIAL, hugetlb and the gate VMA). When the process later makes a reservation
 * accessible, its pages are faulted in and locked at once (issue 15: a JVM's VmLck 3.1 GiB
 * for 837 MiB of accessible mappings).
 */
export function lockedByMlockall(mapping: Mapping): boolean {
  if (notLockableReason(mapping) === undefined) return true;
  if (!mapping.perms.startsWith("---") || mapping.kind === "vdso" || mapping.kind === "vvar" || mapping.kind === "vsyscall") return false;
  return !mapping.vmFlags.some((flag) => UNLOCKABLE_FLAGS[flag] !== undefined);
}

function permissionMatches(wanted: string, perms: string): boolean {
  return wanted.length === 3 ? perms.startsWith(wanted) : perms === wanted;
}

function matchesCriteria(mapping: Mapping, spec: SelectionSpec, globs: PathGlob[]): boolean {
  if (spec.all === true || spec.allAccessible === true) return true;
  if (spec.permissions && !spec.permissions.some((perm) => permissionMatches(perm, mapping.perms))) return false;
  if (spec.kinds && !spec.kinds.includes(mapping.kind)) return false;
  if (globs.length > 0) {
    // Anonymous mappings have no path to match; a deleted file still matches its old path.
    const filePath = pathWithoutDeleted(mapping.path);
    if (filePath === "" || !globs.some((glob) => glob.match(filePath))) return false;
  }
  return true;
}

export interface Selection {
  selected: Mapping[];
  /** Chosen by the spec but left out because the kernel would not lock them. */
  notLockable: { mapping: Mapping; reason: string }[];
}

/** The mappings spec chooses (see validateSelection for how fields combine), in address order. */
export function selectMappings(mappings: Mapping[], spec: SelectionSpec): Selection {
  const effective = effectiveSelection(spec);
  const globs = (effective.paths ?? []).map((pattern, i) => {
    const compiled = compilePathGlob(pattern);
    if (typeof compiled === "string") throw usageError(`mappings.paths[${i}]`, compiled);
    return compiled;
  });
  const result: Selection = { selected: [], notLockable: [] };
  for (const mapping of mappings) {
    if (!matchesCriteria(mapping, effective, globs)) continue;
    const reason = notLockableReason(mapping);
    if (reason) result.notLockable.push({ mapping, reason });
    else result.selected.push(mapping);
  }
  return result;
}
