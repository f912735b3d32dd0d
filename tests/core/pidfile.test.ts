// Pid files are read as systemd reads PIDFile= (issue 14, item 3): a root-only file's content
// never appears in an error, a FIFO or a device never blocks or floods, an unsafe path
// (a user's symlink into root's files) is refused, and a pid file that someone other than
// root or the process's owner can write is reported as a warning.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as api from "../../src/api";
import { LockError } from "../../src/errors";
import { MAX_PID_FILE_BYTES } from "../../src/pidfile";
import { resolveTarget } from "../../src/target";
import { Target, startTarget, stopAllTargets } from "../support/target";

const NOBODY = 65534;
/** A resolution that has not failed within this is a hang (a FIFO read blocks forever). */
const HANG_MS = 2000;

let dir: string;
let target: Target;
/** Shorter than a pid file may be, so that it is read and parsed, not refused from its size. */
const SECRET = "root:$6$s3cr3t$Q0123:19000:0:99999:7:::\n";

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-pidfile-"));
  target = await startTarget({ mode: "idle" });
});
afterAll(async () => {
  fs.rmSync(dir, { recursive: true, force: true });
  await stopAllTargets();
});

function file(name: string, content: string | Buffer, mode = 0o644): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, content, { mode });
  fs.chmodSync(p, mode);
  return p;
}

/** The error of resolving `pidFile`, failing the test if it takes longer than HANG_MS. */
async function refusal(pidFile: string): Promise<LockError> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`resolving pid file ${pidFile} hung for ${HANG_MS} ms`)), HANG_MS);
  });
  try {
    await Promise.race([resolveTarget({ pidFile }), hang]);
  } catch (err) {
    if (err instanceof LockError) {
      expect(Date.now() - started).toBeLessThan(HANG_MS);
      expect(err.message).toContain(pidFile);
      return err;
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
  throw new Error(`pid file ${pidFile} was accepted`);
}

/** Nothing of the file's content may leak into what an operator, a log or Pulumi state sees. */
function expectNoContent(err: LockError, content: string): void {
  const shown = JSON.stringify(err.toJSON());
  for (const piece of ["s3cr3t", "root:", "$6$", content.slice(0, 8)]) expect(shown).not.toContain(piece);
}

test("a root-only file that holds no pid: named, never quoted", async () => {
  const shadow = file("shadow", SECRET, 0o600);
  const err = await refusal(shadow);
  expect(err).toMatchObject({ code: "ENOTARGET", field: "target.pidFile" });
  expect(err.message).toMatch(/does not contain a pid/);
  expectNoContent(err, SECRET);
  if (fs.existsSync("/etc/shadow")) {
    const real = await refusal("/etc/shadow");
    expect(real.message).toMatch(/(does not contain a pid|bytes long)/);
    expectNoContent(real, fs.readFileSync("/etc/shadow", "utf8"));
  }
});

test("a FIFO is refused at once, never opened for a read that would block", async () => {
  const fifo = path.join(dir, "fifo.pid");
  execFileSync("mkfifo", [fifo]);
  try {
    const err = await refusal(fifo);
    expect(err.message).toMatch(/is a FIFO, not a regular file/);
  } finally {
    // Unblocks a reader that the code under test may have left (only on a failure).
    try {
      fs.closeSync(fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {
      // no reader: nothing to unblock
    }
  }
});

test("devices are refused without being read: /dev/zero, /dev/null", async () => {
  expect((await refusal("/dev/zero")).message).toMatch(/is a character device, not a regular file/);
  expect((await refusal("/dev/null")).message).toMatch(/is a character device, not a regular file/);
  expect((await refusal(dir)).message).toMatch(/is a directory, not a regular file/);
});

test("a huge file is refused from its size, its content never quoted", async () => {
  const huge = file("huge.pid", `${target.pid}`.padEnd(8 * 1024 * 1024, "7"));
  const err = await refusal(huge);
  expect(err.message).toMatch(new RegExp(`is ${8 * 1024 * 1024} bytes long; a pid file holds one pid \\(at most ${MAX_PID_FILE_BYTES} bytes\\)`));
  expect(err.message).not.toContain("7777");
});

test("symlinks: a root-owned one is followed; a user's link into root's files is refused", async () => {
  const good = file("good.pid", `${target.pid}\n`);
  const rootLink = path.join(dir, "root-link.pid");
  fs.symlinkSync(good, rootLink);
  expect((await resolveTarget({ pidFile: rootLink }))[0].pid).toBe(target.pid);
  // ".." is taken after following symlinks, as the kernel does: /var/run/.. is / when /var/run -> /run.
  if (fs.lstatSync("/var/run").isSymbolicLink() && path.resolve("/var", fs.readlinkSync("/var/run")) === "/run") {
    expect((await resolveTarget({ pidFile: `/var/run/..${good}` }))[0].pid).toBe(target.pid);
  }

  // The attack: the service user owns the folder of its pid file and points it at a file of
  // root's that holds a pid (of a process it wants lockmem to act on) or a secret.
  const userDir = path.join(dir, "svc");
  fs.mkdirSync(userDir);
  fs.chownSync(userDir, NOBODY, NOBODY);
  const rootPid = file("root-only.pid", `${target.pid}\n`, 0o600);
  const shadow = file("shadow2", SECRET, 0o600);
  for (const [name, to] of [["to-pid", rootPid], ["to-shadow", shadow]]) {
    const link = path.join(userDir, name);
    fs.symlinkSync(to, link);
    fs.lchownSync(link, NOBODY, NOBODY);
    const err = await refusal(link);
    expect(err.message).toMatch(/is refused: on its path, what uid 65534 owns leads to .* owned by uid 0/);
    expectNoContent(err, SECRET);
  }
  // A root-owned file in the user's folder is refused just the same (the user could swap it).
  const inUserDir = path.join(userDir, "root.pid");
  fs.writeFileSync(inUserDir, `${target.pid}\n`);
  expect((await refusal(inUserDir)).message).toMatch(/is refused/);
  // The user's own file in the user's folder is fine (the usual /run/svc/svc.pid), with a
  // warning: that user is not the owner of the process it names.
  const own = path.join(userDir, "own.pid");
  fs.writeFileSync(own, `${target.pid}\n`);
  fs.chownSync(own, NOBODY, NOBODY);
  const [ref] = await resolveTarget({ pidFile: own });
  expect(ref.pid).toBe(target.pid);
  expect(ref.warnings?.join("\n")).toMatch(/belongs to uid 65534, neither root nor the owner of process \d+ \(uid 0\)/);
});

test("garbage, zero, negative, too large: 'does not contain a pid', never quoted", async () => {
  for (const content of ["", "\n", "abc", "0", "-5", "4194305", "12 34", "0x10", `${target.pid}abc`, "\u0000123"]) {
    const err = await refusal(file("garbage.pid", content));
    expect(err.message).toMatch(/(is empty: it does not contain a pid|does not contain a pid)/);
    if (content.trim().length > 2) expect(err.message).not.toContain(JSON.stringify(content.trim()));
  }
});

test("a pid file anyone can write: the lock report warns, the plan still works", async () => {
  const open = file("open.pid", ` ${target.pid}\n`, 0o666);
  const report = await api.plan({ target: { pidFile: open } });
  expect(report.processes[0].pid).toBe(target.pid);
  expect(report.processes[0].warnings.join("\n")).toMatch(/pid file .*open\.pid is writable by every user/);
  const safe = file("safe.pid", `${target.pid}\n`, 0o644);
  expect((await api.plan({ target: { pidFile: safe } })).processes[0].warnings).toEqual([]);
});
