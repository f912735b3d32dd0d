// The journal's `.regs` file is written by the addon (native/journal.cc) and read by
// TypeScript (src/journal/format.ts): the writer must write exactly the fields, in the
// order and with the version, that the reader describes.
import * as fs from "fs";
import * as path from "path";
import { parseRegsFile, REGS_FIELDS, REGS_OPTIONAL_FIELDS, REGS_VERSION } from "../../src/journal/format";
import { native } from "../../src/native";
import { repoRoot } from "../support/repo";

function writerSource(fn = "begin"): string {
  const text = fs.readFileSync(path.join(repoRoot(), "native", "journal.cc"), "utf8");
  const begin = text.indexOf(`bool Journal::${fn}(`);
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

test("the optional lines src/journal/format.ts reads are the ones native/journal.cc appends", () => {
  const keys = [...writerSource("saveBlockedCalls").matchAll(/"([A-Za-z]+)=/g)].map((m) => m[1]);
  expect(keys).toEqual([...REGS_OPTIONAL_FIELDS]);
});

describe("the calls= line (arm64's blocked calls, appended before the stop)", () => {
  const header = { pid: 4242, tid: 4242 };
  const regsFile = (extra: string): string =>
    `v=2\npid=4242\ntid=4242\nwasStopped=0\nregs=${"-".repeat(native().regsSize * 2)}\nsigmask=${"-".repeat(16)}\nforeignStop=0\nrestored=0\n${extra}`;
  const entry = "4243:22:5:ffffccc01db0:1:ffffffffffffffff:0:8:ffffccc01d60:427714";

  test("one lockmem writes is read back as it is", () => {
    expect(parseRegsFile(regsFile(`calls=${entry},${entry.replace("4243", "4244")}\n`), header)).toMatchObject({ blockedCalls: `${entry},${entry.replace("4243", "4244")}` });
    expect(parseRegsFile(regsFile(""), header)).not.toHaveProperty("blockedCalls");
  });

  test.each([
    ["a tid that is no pid", entry.replace("4243", "0")],
    ["a word too many", `${entry}:1`],
    ["a word too few", entry.slice(0, entry.lastIndexOf(":"))],
    ["upper-case or prefixed hex", entry.replace("ffffccc01db0", "0xFFFF")],
    ["a negative number", entry.replace(":22:", ":-1:")],
    ["anything after an entry", `${entry};touch /tmp/x`],
    ["an empty entry", `${entry},`],
  ])("%s is refused: the journal is set aside, nothing run", (_what, value) => {
    expect(parseRegsFile(regsFile(`calls=${value}\n`), header)).toBe("its calls line is not one lockmem writes");
  });

  test("the addon checks it again: a malformed value is a TypeError before any process is touched", () => {
    expect(() => native().undoStop({ pid: process.pid, blockedCalls: `${entry}:1` })).toThrow(/blockedCalls must be a journal's calls= value/);
    expect(() => native().undoStop({ pid: process.pid, blockedCalls: "4243:22" })).toThrow(/blockedCalls must be/);
  });
});
