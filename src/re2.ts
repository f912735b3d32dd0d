// RE2 (re2js, pure JavaScript), loaded on first use: requiring it costs ~8 ms, which an agent
// that answers a pid or unit target without globs never needs to pay at start.
import type { RE2JS } from "re2js";

let loaded: typeof RE2JS | undefined;

export function re2(): typeof RE2JS {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  loaded ??= (require("re2js") as typeof import("re2js")).RE2JS;
  return loaded;
}
