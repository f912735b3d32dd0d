import { ChildProcess, spawn } from "child_process";
import { chmodSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import { LockError } from "../../src/errors";
import { joinCmdline, resolveTarget, sameProcess, validateTargetSpec } from "../../src/target";
import { TargetSpec } from "../../src/types";

interface FakeProcess {
  pid: number;
  ppid: number;
  comm: string;
  argv: string[];
  startTime?: string;
  flags?: number;
}

/** A fake procfs with just stat and cmdline for each process. */
function makeProcRoot(processes: FakeProcess[]): string {
  const root = mkdtempSync(path.join(tmpdir(), "lockmem-proc-"));
  for (const p of processes) {
    const dir = path.join(root, String(p.pid));
    mkdirSync(dir);
    const fields = ["S", p.ppid, p.pid, p.pid, 0, -1, p.flags ?? 4194304, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 1, 0, p.startTime ?? String(1000 + p.pid), 0, 0];
    writeFileSync(path.join(dir, "stat"), `${p.pid} (${p.comm}) ${fields.join(" ")}\n`);
    writeFileSync(path.join(dir, "cmdline"), p.argv.length ? p.argv.join("\0") + "\0" : "");
  }
  mkdirSync(path.join(root, "self"));
  writeFileSync(path.join(root, "meminfo"), "");
  return root;
}

const SELF = 500;
const processes: FakeProcess[] = [
  { pid: 1, ppid: 0, comm: "init", argv: ["/sbin/init"] },
  { pid: 2, ppid: 0, comm: "kthreadd", argv: [], flags: 0x00208040 },
  { pid: 3, ppid: 2, comm: "postgres", argv: [], flags: 0x00208040 }, // a kernel thread that happens to share the name
  { pid: 400, ppid: 1, comm: "bash", argv: ["bash", "-c", "lockmem lock --cmdline postgres.*main"] },
  { pid: SELF, ppid: 400, comm: "node", argv: ["node", "lockmem", "lock", "--cmdline", "postgres.*main"] },
  { pid: 600, ppid: 1, comm: "postgres", argv: ["/usr/lib/postgresql/16/bin/postgres", "-D", "/var/lib/postgresql/16/main"] },
  { pid: 601, ppid: 600, comm: "postgres", argv: ["postgres: 16/main: checkpointer"] },
  { pid: 700, ppid: 1, comm: "my ) (server", argv: ["/opt/my server/bin/srv", "--port", "80"] },
  { pid: 800, ppid: 1, comm: "zombie", argv: [] },
];

let root: string;
const opts = (): { procRoot: string; selfPid: number } => ({ procRoot: root, selfPid: SELF });

beforeAll(() => {
  root = makeProcRoot(processes);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function rejection(promise: Promise<unknown>): Promise<LockError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof LockError) return err;
    throw err;
  }
  throw new Error("expected a LockError");
}

describe("validateTargetSpec", () => {
  test.each<[TargetSpec, string]>([
    [{}, "target"],
    [{ pid: 1, name: "x" }, "target"],
    [{ pid: 0 }, "target.pid"],
    [{ pid: 1.5 }, "target.pid"],
    [{ pid: "12" as unknown as number }, "target.pid"],
    [{ cmdline: "postgres(" }, "target.cmdline"],
    [{ cmdline: "" }, "target.cmdline"],
    [{ name: " " }, "target.name"],
    [{ name: "a-very-long-process-name" }, "target.name"],
    [{ pidFile: "" }, "target.pidFile"],
    [{ name: "x", match: "many" as "all" }, "target.match"],
    [{ pidfile: "/run/x.pid" } as unknown as TargetSpec, "target.pidfile"],
  ])("%j is rejected at %s", (spec, field) => {
    const problem = validateTargetSpec(spec);
    expect(problem).toBeInstanceOf(LockError);
    expect(problem).toMatchObject({ code: "EUSAGE", field });
    expect(problem?.message.startsWith(field)).toBe(true);
  });

  test("a bad regex says why", () => {
    expect(validateTargetSpec({ cmdline: "[a-" })?.message).toMatch(/target\.cmdline: invalid regular expression/);
  });

  test("good specs pass", () => {
    expect(validateTargetSpec({ pid: 42 })).toBeUndefined();
    expect(validateTargetSpec({ cmdline: "postgres.*main", match: "all" })).toBeUndefined();
    expect(validateTargetSpec({ systemdUnit: "postgresql.service" })).toBeUndefined();
  });

  test("the field prefix is configurable for other input shapes", () => {
    expect(validateTargetSpec({ pid: -1 }, "args.target")).toMatchObject({ field: "args.target.pid" });
  });
});

describe("resolveTarget on a fake /proc", () => {
  test("pid gives its identity", async () => {
    const [ref] = await resolveTarget({ pid: 700 }, opts());
    expect(ref).toEqual({ pid: 700, startTime: "1700", comm: "my ) (server", cmdline: "/opt/my server/bin/srv --port 80" });
  });

  test("a pid that does not exist is ENOTARGET", async () => {
    const err = await rejection(resolveTarget({ pid: 4242 }, opts()));
    expect(err).toMatchObject({ code: "ENOTARGET", pid: 4242 });
  });

  test("our own pid is a usage error", async () => {
    const err = await rejection(resolveTarget({ pid: SELF }, opts()));
    expect(err).toMatchObject({ code: "EUSAGE", field: "target.pid" });
    expect(err.message).toMatch(/lockmem cannot lock itself/);
  });

  test("a kernel thread by pid is a usage error", async () => {
    expect(await rejection(resolveTarget({ pid: 2 }, opts()))).toMatchObject({ code: "EUSAGE" });
  });

  test("name matches comm exactly and skips kernel threads", async () => {
    const refs = await resolveTarget({ name: "postgres", match: "all" }, opts());
    expect(refs.map((r) => r.pid)).toEqual([600, 601]);
    expect((await resolveTarget({ name: "my ) (server" }, opts()))[0].pid).toBe(700);
    expect(await rejection(resolveTarget({ name: "postgre" }, opts()))).toMatchObject({ code: "ENOTARGET" });
  });

  test("several matches with match one is EAMBIGUOUS listing each", async () => {
    const err = await rejection(resolveTarget({ name: "postgres" }, opts()));
    expect(err.code).toBe("EAMBIGUOUS");
    expect(err.message).toContain("600: /usr/lib/postgresql/16/bin/postgres -D /var/lib/postgresql/16/main");
    expect(err.message).toContain("601: postgres: 16/main: checkpointer");
    expect(err.hint).toBe("use match: all / --all-matches or a narrower spec");
  });

  test("cmdline regex runs over the space-joined args and never matches lockmem or its ancestors", async () => {
    // Both lockmem (500) and the shell that started it (400) carry the pattern in their command line.
    const refs = await resolveTarget({ cmdline: "postgres.*main", match: "all" }, opts());
    expect(refs.map((r) => r.pid)).toEqual([600, 601]);
    const [one] = await resolveTarget({ cmdline: "-D /var/lib/postgresql" }, opts());
    expect(one.pid).toBe(600);
  });

  test("nothing matching is ENOTARGET naming the spec", async () => {
    const err = await rejection(resolveTarget({ cmdline: "^redis" }, opts()));
    expect(err).toMatchObject({ code: "ENOTARGET" });
    expect(err.message).toContain("/^redis/");
  });

  test("an invalid spec is rejected before looking at processes", async () => {
    const err = await rejection(resolveTarget({ cmdline: "(" }, { procRoot: "/nonexistent", selfPid: SELF }));
    expect(err).toMatchObject({ code: "EUSAGE", field: "target.cmdline" });
  });

  describe("pidFile", () => {
    const file = (name: string, content: string): string => {
      const p = path.join(root, name);
      writeFileSync(p, content);
      return p;
    };
    test("reads and trims the pid", async () => {
      const [ref] = await resolveTarget({ pidFile: file("ok.pid", "600\n") }, opts());
      expect(ref.pid).toBe(600);
    });
    test("garbage, a stale pid, a missing file, our own pid", async () => {
      expect(await rejection(resolveTarget({ pidFile: file("bad.pid", "six hundred") }, opts()))).toMatchObject({ code: "ENOTARGET" });
      expect(await rejection(resolveTarget({ pidFile: file("zero.pid", "0") }, opts()))).toMatchObject({ code: "ENOTARGET" });
      const stale = await rejection(resolveTarget({ pidFile: file("stale.pid", "4242") }, opts()));
      expect(stale).toMatchObject({ code: "ENOTARGET", pid: 4242 });
      expect(stale.message).toMatch(/stale/);
      expect(await rejection(resolveTarget({ pidFile: path.join(root, "none.pid") }, opts()))).toMatchObject({ code: "ENOTARGET" });
      expect(await rejection(resolveTarget({ pidFile: file("self.pid", `${SELF}`) }, opts()))).toMatchObject({
        code: "EUSAGE",
        field: "target.pidFile",
      });
    });
  });

  describe("systemdUnit", () => {
    // A stand-in systemctl that records its arguments: proves there is no shell in between.
    const fakeSystemctl = (script: string): string => {
      const p = path.join(root, `systemctl-${Math.random().toString(36).slice(2)}`);
      writeFileSync(p, `#!/bin/sh\n${script}\n`);
      chmodSync(p, 0o755);
      return p;
    };

    test("uses MainPID and passes the unit name as one argument", async () => {
      const argsFile = path.join(root, "systemctl-args");
      const systemctl = fakeSystemctl(`printf '%s\\n' "$@" > '${argsFile}'\necho MainPID=600\necho LoadState=loaded\necho ActiveState=active`);
      const [ref] = await resolveTarget({ systemdUnit: "pg; touch /tmp/pwned" }, { ...opts(), systemctl });
      expect(ref.pid).toBe(600);
      expect(readFileSync(argsFile, "utf8").trim().split("\n")).toEqual([
        "show",
        "--property=MainPID",
        "--property=LoadState",
        "--property=ActiveState",
        "--",
        "pg; touch /tmp/pwned",
      ]);
    });

    test("MainPID 0 means not running", async () => {
      const systemctl = fakeSystemctl("echo MainPID=0\necho LoadState=not-found\necho ActiveState=inactive");
      const err = await rejection(resolveTarget({ systemdUnit: "nope.service" }, { ...opts(), systemctl }));
      expect(err).toMatchObject({ code: "ENOTARGET" });
      expect(err.message).toMatch(/nope\.service is not running: no such unit/);
    });

    test("systemctl failing or missing is explained", async () => {
      const failing = fakeSystemctl("echo 'System has not been booted with systemd as init system (PID 1).' >&2\nexit 1");
      const err = await rejection(resolveTarget({ systemdUnit: "pg" }, { ...opts(), systemctl: failing }));
      expect(err.message).toMatch(/not been booted with systemd/);
      const missing = await rejection(resolveTarget({ systemdUnit: "pg" }, { ...opts(), systemctl: path.join(root, "no-systemctl") }));
      expect(missing.message).toMatch(/not installed/);
    });
  });
});

test("joinCmdline and sameProcess", () => {
  expect(joinCmdline("a\0b c\0d\0")).toBe("a b c d");
  expect(joinCmdline("")).toBe("");
  expect(sameProcess({ pid: 1, startTime: "5" }, { pid: 1, startTime: "5" })).toBe(true);
  expect(sameProcess({ pid: 1, startTime: "5" }, { pid: 1, startTime: "6" })).toBe(false);
});

describe("resolveTarget on the real /proc", () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    if (child?.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL");
    child = undefined;
  });

  test("finds a sleep we started, by pid and by a unique cmdline", async () => {
    const marker = String(31536000 + (process.pid % 1000));
    child = spawn("sleep", [marker], { stdio: "ignore" });
    const pid = child.pid!;
    // Wait (with a deadline) until the child has exec'd sleep: before that it is a copy of node.
    const deadline = Date.now() + 5000;
    let ref = (await resolveTarget({ pid }))[0];
    while (ref.comm !== "sleep" && Date.now() < deadline) {
      await new Promise((r) => setImmediate(r));
      ref = (await resolveTarget({ pid }))[0];
    }
    expect(ref).toMatchObject({ pid, comm: "sleep", cmdline: `sleep ${marker}` });
    const [byCmdline] = await resolveTarget({ cmdline: `^sleep ${marker}$` });
    expect(sameProcess(byCmdline, ref)).toBe(true);
    await expect(resolveTarget({ pid: process.pid })).rejects.toMatchObject({ code: "EUSAGE" });
  });
});
