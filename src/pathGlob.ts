// Path globs (--path, mappings.paths) matched in linear time (issue 14, item 4).
//
// minimatch matches with JavaScript regular expressions, which backtrack: the glob
// `*a*a*a*a*a*a*a*a*b` against a mapping path of 100 'a's ran for over 10 minutes here, and
// a target's user chooses the paths of its mappings. So the glob is translated by minimatch
// (same syntax and meaning as before) and the resulting expression is run by RE2.
//
// minimatch's expressions carry lookaheads that keep `*` and `**` from matching "." and ".."
// path segments; RE2 has no lookaround. Mapping paths come from the kernel's d_path(), which
// never contains such segments, so those lookaheads never decide anything here and are
// dropped. Anything else RE2 cannot run (a negation, `!(...)`) is refused when checked.
import { Minimatch } from "minimatch";
import type { RE2JS } from "re2js";
import { re2 } from "./re2";

// "libssl*" (no slash) matches the file name anywhere (matchBase), and "**" also walks into
// hidden directories (dot).
const GLOB_OPTIONS = { matchBase: true, dot: true } as const;

/** The lookaheads minimatch adds against "." and ".." segments (minimatch 9). */
const DOT_SEGMENT_GUARDS = ["(?!(?:^|\\/)\\.\\.?(?:$|\\/))", "(?!(?:\\/|^)(?:\\.{1,2})($|\\/))"];

export interface PathGlob {
  match(path: string): boolean;
}

/** Compiles `pattern`, or returns why it cannot be used (minimatch syntax, RE2 for matching). */
export function compilePathGlob(pattern: string): PathGlob | string {
  const mm = new Minimatch(pattern, GLOB_OPTIONS);
  if (mm.comment) return `${JSON.stringify(pattern)} starts with '#', which makes it a comment that matches nothing (write \\# for a literal '#')`;
  if (mm.negate) return `${JSON.stringify(pattern)} is a negation ('!' first), which lockmem does not support (write \\! for a literal '!')`;
  const re = mm.makeRe();
  if (re === false) return `${JSON.stringify(pattern)} is not a valid glob`;
  let source = re.source;
  for (const guard of DOT_SEGMENT_GUARDS) source = source.split(guard).join("");
  let compiled: RE2JS;
  try {
    compiled = re2().compile(source, re.flags.includes("i") ? re2().CASE_INSENSITIVE : 0);
  } catch {
    return `${JSON.stringify(pattern)} uses a construct lockmem cannot match in linear time (a negation such as !(...))`;
  }
  // minimatch's matchBase: a pattern without a slash is matched against the file name.
  const baseOnly = !pattern.includes("/");
  return {
    match: (path: string): boolean => compiled.test(baseOnly ? path.slice(path.lastIndexOf("/") + 1) : path),
  };
}
