// The cmdline selector's regular expression, run by RE2 (re2js, pure JavaScript): matching
// takes time linear in the command line, whatever the pattern. JavaScript's RegExp
// backtracks: `(a+)+$` against a 41-character command line ran 630 s (issue 14, item 4).
// RE2 has no backreferences and no lookaround; such a pattern is refused with a message.
import type { RE2JS } from "re2js";
import { re2 } from "./re2";
import { LockError, usageError } from "./errors";
import { MAX_CMDLINE_MATCHED_BYTES, MAX_CMDLINE_PATTERN_LENGTH, MAX_CMDLINE_PROGRAM_SIZE } from "./inputBounds";

export interface CmdlinePattern {
  /** True when the pattern matches somewhere in the first MAX_CMDLINE_MATCHED_BYTES of `cmdline`. */
  test(cmdline: string): boolean;
}

function compileOrProblem(source: string, field: string): CmdlinePattern | LockError {
  if (source.length > MAX_CMDLINE_PATTERN_LENGTH) {
    return usageError(field, `is ${source.length} characters long; the limit is ${MAX_CMDLINE_PATTERN_LENGTH}`);
  }
  let compiled: RE2JS;
  try {
    compiled = re2().compile(source);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    return usageError(
      field,
      `invalid regular expression: ${detail}`,
      "lockmem matches with RE2 (linear time): no backreferences (\\1) and no lookaround ((?=, (?!, (?<=, (?<!); see https://github.com/google/re2/wiki/Syntax",
    );
  }
  if (compiled.programSize() > MAX_CMDLINE_PROGRAM_SIZE) {
    return usageError(field, `is too complex (RE2 program size ${compiled.programSize()}, the limit is ${MAX_CMDLINE_PROGRAM_SIZE})`, "write a shorter pattern, with smaller repetition counts");
  }
  return { test: (cmdline) => compiled.test(cmdline.slice(0, MAX_CMDLINE_MATCHED_BYTES)) };
}

/** The problem with `source` as a cmdline pattern (an EUSAGE LockError naming `field`), or undefined. */
export function cmdlinePatternProblem(source: string, field = "target.cmdline"): LockError | undefined {
  const result = compileOrProblem(source, field);
  return result instanceof LockError ? result : undefined;
}

/** Compiles `source`; throws the EUSAGE LockError of cmdlinePatternProblem. */
export function compileCmdlinePattern(source: string, field = "target.cmdline"): CmdlinePattern {
  const result = compileOrProblem(source, field);
  if (result instanceof LockError) throw result;
  return result;
}
