// The journal's `.regs` file is written by the addon (native/journal.cc) and read by
// TypeScript (src/journal/format.ts): the writer must write exactly the fields, in the
// order and with the version, that the reader describes.
import * as fs from "fs";
import * as path from "path";
import { REGS_FIELDS, REGS_VERSION } from "../../src/journal/format";
import { repoRoot } from "../support/repo";

function writerSource(): string {
  const text = fs.readFileSync(path.join(repoRoot(), "native", "journal.cc"), "utf8");
  const begin = text.indexOf("bool Journal::begin(");
  expect(begin).toBeGreaterThan(0);
  return text.slice(begin, text.indexOf("\n}\n", begin));
}

test("native/journal.cc writes the fields src/journal/format.ts reads, in its order", () => {
  const keys = [...writerSource().matchAll(/(?:"|\\n)([A-Za-z]+)=/g)].map((m) => m[1]);
  expect(keys).toEqual([...REGS_FIELDS]);
});

test("native/journal.cc writes the version src/journal/format.ts calls current", () => {
  expect(/"v=(\d+)\\n/.exec(writerSource())?.[1]).toBe(REGS_VERSION);
});
