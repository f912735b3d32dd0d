// Inputs that scale lockmem's work are bounded, and the cmdline pattern runs in linear time
// (issue 14, item 4: `--cmdline '(a+)+$'` against a 41-character command line ran 630 s).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import { LockError } from "../../src/errors";
import { MAX_CMDLINE_MATCHED_BYTES, MAX_CMDLINE_PATTERN_LENGTH, MAX_PATH_GLOBS, MAX_PATH_LENGTH } from "../../src/inputBounds";
import { parseRequest } from "../../src/agent/protocol";
import { Minimatch } from "minimatch";
import { selectMappings, validateSelection } from "../../src/select";
import { Mapping } from "../../src/types";
import { resolveTarget, validateTargetSpec } from "../../src/target";

const SELF = 500;
let root: string;

/** A fake procfs: stat and cmdline of each process. */
function makeProcRoot(processes: Array<{ pid: number; comm: string; argv: string[] }>): string {
  const dir = mkdtempSync(path.join(tmpdir(), "lockmem-bounds-"));
  for (const p of processes) {
    mkdirSync(path.join(dir, String(p.pid)));
    const fields = ["S", 1, p.pid, p.pid, 0, -1, 4194304, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 1, 0, String(1000 + p.pid), 0, 0];
    writeFileSync(path.join(dir, String(p.pid), "stat"), `${p.pid} (${p.comm}) ${fields.join(" ")}\n`);
    writeFileSync(path.join(dir, String(p.pid), "cmdline"), p.argv.join("\0") + "\0");
  }
  return dir;
}

// 45 'a' and a '!': `(a+)+$` fails only after trying every way to split the a's (2^45) in a
// backtracking engine.
const EVIL_CMDLINE = "a".repeat(45) + "!";
const LONG_ARG = "x".repeat(100_000);

beforeAll(() => {
  root = makeProcRoot([
    { pid: 600, comm: "evil", argv: [EVIL_CMDLINE] },
    { pid: 601, comm: "long", argv: ["/usr/bin/long", LONG_ARG, "--marker-at-the-end"] },
    { pid: 602, comm: "srv", argv: ["/opt/srv", "--port", "80"] },
  ]);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const opts = (): { procRoot: string; selfPid: number } => ({ procRoot: root, selfPid: SELF });

test("(a+)+$ against a 46-character command line returns at once (RE2, linear time)", async () => {
  const started = process.hrtime.bigint();
  await expect(resolveTarget({ cmdline: "(a+)+$" }, opts())).rejects.toMatchObject({ code: "ENOTARGET" });
  await expect(resolveTarget({ cmdline: "^(a|aa)+!$" }, opts())).resolves.toMatchObject([{ pid: 600 }]);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  expect(ms).toBeLessThan(500);
});

test("patterns RE2 cannot run are refused, naming the field and why", () => {
  for (const pattern of ["(a)\\1", "foo(?=bar)", "foo(?!bar)", "(?<=x)y", "(?<!x)y"]) {
    const problem = validateTargetSpec({ cmdline: pattern });
    expect(problem).toBeInstanceOf(LockError);
    expect(problem).toMatchObject({ code: "EUSAGE", field: "target.cmdline" });
    expect(problem?.message).toMatch(/^target\.cmdline: invalid regular expression/);
    expect(problem?.hint).toMatch(/RE2.*no backreferences.*no lookaround/);
  }
  expect(validateTargetSpec({ cmdline: "postgres: \\d+/main" })).toBeUndefined();
});

test("a pattern longer than the limit, or too complex, is refused", () => {
  expect(validateTargetSpec({ cmdline: "a".repeat(MAX_CMDLINE_PATTERN_LENGTH + 1) })?.message).toMatch(
    new RegExp(`target\\.cmdline: is ${MAX_CMDLINE_PATTERN_LENGTH + 1} characters long; the limit is ${MAX_CMDLINE_PATTERN_LENGTH}`),
  );
  expect(validateTargetSpec({ cmdline: "((a{1,100}){1,100}){1,100}" })?.field).toBe("target.cmdline");
});

test(`only the first ${MAX_CMDLINE_MATCHED_BYTES} bytes of a command line are read and matched`, async () => {
  await expect(resolveTarget({ cmdline: "marker-at-the-end" }, opts())).rejects.toMatchObject({ code: "ENOTARGET" });
  const [ref] = await resolveTarget({ cmdline: "^/usr/bin/long x+" }, opts());
  expect(ref.pid).toBe(601);
  expect(ref.cmdline.length).toBeLessThanOrEqual(MAX_CMDLINE_MATCHED_BYTES);
});

test("path globs: count and length are bounded, with the field named", () => {
  const many = Array.from({ length: MAX_PATH_GLOBS + 1 }, (_, i) => `/usr/lib/lib${i}.so`);
  expect(validateSelection({ paths: many })).toMatchObject({ code: "EUSAGE", field: "mappings.paths" });
  expect(validateSelection({ paths: many.slice(0, MAX_PATH_GLOBS) })).toBeUndefined();
  expect(validateSelection({ paths: ["/lib", "/" + "a".repeat(MAX_PATH_LENGTH)] })).toMatchObject({ code: "EUSAGE", field: "mappings.paths[1]" });
});

test("the agent's request schema uses the same bounds", () => {
  const req = (target: object, mappings?: object): string => JSON.stringify({ v: 1, op: "status", args: { target, ...(mappings ? { mappings } : {}) } });
  expect(() => parseRequest(req({ cmdline: "a".repeat(MAX_CMDLINE_PATTERN_LENGTH + 1) }))).toThrow(/target\.cmdline/);
  expect(() => parseRequest(req({ pid: 1 }, { paths: Array.from({ length: MAX_PATH_GLOBS + 1 }, () => "/x") }))).toThrow(/mappings\.paths/);
  expect(() => parseRequest(req({ pidFile: "/" + "a".repeat(MAX_PATH_LENGTH) }))).toThrow(/target\.pidFile/);
  expect(parseRequest(req({ cmdline: "a".repeat(MAX_CMDLINE_PATTERN_LENGTH) })).op).toBe("status");
});

describe("path globs run by RE2", () => {
  const mapping = (p: string): Mapping => ({
    start: 0x1000n, end: 0x2000n, perms: "r-xp", offset: 0n, dev: "08:01", inode: 1, path: p, kind: "file",
    size: 4096, rss: 0, anonymous: 0, locked: 0, vmFlags: [],
  });

  test("*a*a*a*a*a*a*a*a*b against a long path of a's returns at once", () => {
    // minimatch's backtracking RegExp ran for over 10 minutes on a 100-character path.
    const started = process.hrtime.bigint();
    const selection = selectMappings([mapping("/" + "a".repeat(4000))], { paths: ["*a*a*a*a*a*a*a*a*b", "/**/*a*a*a*a*a*a*b"] });
    expect(selection.selected).toEqual([]);
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(500);
  });

  test("the same answers as minimatch for the globs people write", () => {
    const globs = ["/usr/lib/**", "libc.so*", "**/libssl*.so*", "\\[heap\\]", "/tmp/fx/dir with space/*", "{libc,libm}.so.6", "*.so.[0-9]*", "lib?.so", "/lib/[a-c]*", "[!l]*", "/usr/*/libc.so.6", "**", "*", "/usr/lib/**/libc.so.6", "+(a|b).so", "[[:alpha:]]*"];
    const paths = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/libm.so.6", "/usr/lib/libssl.so.3", "[heap]", "[stack]", "/tmp/fx/dir with space/f", "/lib/b.so", "/usr/bin/.hidden", "libx.so", "/opt/a.so", "/opt/ab.so", "/ünï/cödé"];
    for (const glob of globs) {
      const mm = new Minimatch(glob, { matchBase: true, dot: true });
      for (const p of paths) {
        const ours = selectMappings([mapping(p)], { paths: [glob] }).selected.length === 1;
        if (ours !== mm.match(p)) throw new Error(`${glob} vs ${p}: lockmem ${ours}, minimatch ${mm.match(p)}`);
      }
    }
  });

  test("what RE2 cannot run is refused when checked: negations, comments", () => {
    expect(validateSelection({ paths: ["/usr/lib/*", "!libc*"] })).toMatchObject({ code: "EUSAGE", field: "mappings.paths[1]" });
    expect(validateSelection({ paths: ["/usr/lib/!(libc)*"] })?.message).toMatch(/cannot match in linear time/);
    expect(validateSelection({ paths: ["#x"] })?.message).toMatch(/comment/);
  });
});
