// Shapes shared by the host library, the agent protocol and the provider.

/** How to find the target process(es). Exactly one of pid, pidFile, systemdUnit, name, cmdline. */
export interface TargetSpec {
  pid?: number;
  pidFile?: string;
  systemdUnit?: string;
  /** Process name as in /proc/PID/comm (exact match). */
  name?: string;
  /** Regular expression matched against the NUL-joined-by-space /proc/PID/cmdline. */
  cmdline?: string;
  /** "one" (default): more than one match is an error listing them; "all": every match. */
  match?: "one" | "all";
}

/** The kinds of mapping (proc/smaps.ts tells them apart); the one list, for types, schema and checks. */
export const MAPPING_KINDS = ["file", "anon", "heap", "stack", "shmem", "vdso", "vvar", "vsyscall"] as const;
export type MappingKind = (typeof MAPPING_KINDS)[number];

/** Which mappings to lock or unlock. Default: permissions ["r-x", "rwx"]. */
export interface SelectionSpec {
  /** Three-letter permission strings such as "r-x" or "rw-" (the private/shared letter is ignored). */
  permissions?: string[];
  /** Glob patterns matched against the mapping's path. */
  paths?: string[];
  kinds?: MappingKind[];
  /** Everything: mlockall / munlockall (PROT_NONE reservations are marked locked too). */
  all?: boolean;
  /** Every accessible mapping, one mlock2 / munlock per range: reservations stay unlocked. */
  allAccessible?: boolean;
}

/** One line of /proc/PID/smaps. Sizes in bytes. */
export interface Mapping {
  start: bigint;
  end: bigint;
  /** Four letters as in smaps, e.g. "r-xp". */
  perms: string;
  offset: bigint;
  dev: string;
  inode: number;
  /** Path or pseudo-path ("[heap]", "[stack]", "[vdso]", "[anon:name]"); "" for anonymous. */
  path: string;
  kind: MappingKind;
  size: number;
  rss: number;
  anonymous: number;
  /** smaps `Locked:`, resident locked bytes. */
  locked: number;
  vmFlags: string[];
}

/** Identity of a process: a pid is reused, (pid, startTime) is not. */
export interface ProcessRef {
  pid: number;
  /** Field 22 of /proc/PID/stat, clock ticks since boot, as a decimal string. */
  startTime: string;
  comm: string;
  cmdline: string;
  /** What the operator should know about how it was found (a pid file others can write). */
  warnings?: string[];
}
