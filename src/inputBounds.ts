// Bounds on every input whose size scales lockmem's work (issue 14, item 4), in one place so
// that the agent's request schema (agent/protocol.ts), the CLI and the provider's check
// agree. Each is far above what a legitimate request needs.

/** Characters in a cmdline regular expression. */
export const MAX_CMDLINE_PATTERN_LENGTH = 1024;
/**
 * Bytes of /proc/PID/cmdline read and matched. The kernel allows up to ARG_MAX (2 MiB and
 * more) per process; before Linux 4.2 it showed only the first page, and a pattern that
 * needs more than that to tell services apart is not one anyone writes.
 */
export const MAX_CMDLINE_MATCHED_BYTES = 4096;
/** Size of a compiled cmdline pattern (RE2 program instructions): bounds the work per byte. */
export const MAX_CMDLINE_PROGRAM_SIZE = 20_000;
/** Path globs in one selection (--path, mappings.paths). */
export const MAX_PATH_GLOBS = 64;
/** Characters in one path or glob: PATH_MAX. */
export const MAX_PATH_LENGTH = 4096;
