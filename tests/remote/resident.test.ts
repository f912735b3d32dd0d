// The resident agent (agent.lingerSeconds, issue 17): over a real sshd, a later run reaches
// the agent a former run left, through a direct-streamlocal channel, without starting Node
// on the host; it leaves after its idle time; a dead one's socket is taken over; nobody but
// the SSH user reaches it; a folder others can enter gets no socket.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ensureAgent, presumedAgentCommand, residentSocketGuesses } from "../../provider/agent/deploy";
import { SshConnection, SshTransport, closeAll } from "../../provider/transport/ssh";
import { AgentReply, PROTOCOL_VERSION, SOCKET_NAME } from "../../src/agent/protocol";
import { ensureBuilt } from "../e2e/lockmem-helpers";
import { PLAIN_USER, SshFixture, startSshFixture } from "../support/sshd";
import { isLockedVma, kernelMappings } from "../support/smaps";
import { Target, startTarget, stopAllTargets, waitUntil } from "../support/target";

jest.setTimeout(120_000);

let fx: SshFixture;
let scratch: string;
/** Each Node start on the hosts appends a line here (the `node` first on the sessions' PATH). */
let nodeStarts: string;

beforeAll(async () => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-resident-"));
  fs.chmodSync(scratch, 0o755);
  const bin = path.join(scratch, "bin");
  fs.mkdirSync(bin);
  nodeStarts = path.join(scratch, "node-starts");
  const node = fs.realpathSync("/usr/bin/node");
  fs.writeFileSync(path.join(bin, "node"), `#!/bin/sh\necho "$$" >> ${nodeStarts}\nexec ${node} "$@"\n`, { mode: 0o755 });
  fx = await startSshFixture({ hosts: 1, firstOctet: 188, agentBinDir: bin, agentWrapper: node });
});

afterAll(async () => {
  await closeAll();
  for (const pid of residents()) process.kill(pid, "SIGKILL");
  await fx?.stop();
  await stopAllTargets();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

function conn(): SshConnection {
  const h = fx.hosts[0];
  return { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey };
}

function starts(): number {
  return fs.existsSync(nodeStarts) ? fs.readFileSync(nodeStarts, "utf8").trim().split("\n").length : 0;
}

function parentOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/**
 * Agents of this test that run with --linger (ours: started through this test's sshd),
 * without their guardian stubs (a fork of the agent: the same command line, its child).
 */
function residents(): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0");
      if (argv.some((a) => a.startsWith("--linger=")) && argv.some((a) => scratch && a.startsWith(scratch))) pids.push(Number(name));
    } catch {
      // gone
    }
  }
  return pids.filter((pid) => {
    try {
      return !pids.includes(parentOf(pid));
    } catch {
      return false;
    }
  });
}

/** A deployed bundle folder of its own; the transport runs the presumed command, as each new `pulumi` run does. */
async function deployed(name: string): Promise<{ agentDir: string; bundleDir: string }> {
  const agentDir = path.join(scratch, name);
  const d = await ensureAgent(conn(), { dir: agentDir, timeoutMs: 60_000, force: true });
  return { agentDir, bundleDir: d.dir };
}

function presumed(agentDir: string, linger: number): SshTransport {
  return new SshTransport(conn(), { agentCommand: presumedAgentCommand(conn(), agentDir), persistent: true, lingerSeconds: linger });
}

async function call(t: SshTransport, op: "lock" | "unlock" | "status", pid: number): Promise<AgentReply> {
  const reply = await t.run({ v: PROTOCOL_VERSION, op, args: { target: { pid } } } as never, { timeoutMs: 60_000 });
  if (!reply.ok) throw new Error(`${op}: ${JSON.stringify(reply.error)}`);
  return reply;
}

/** The one lingering agent of this test, once it is there. */
async function theResident(what = "the resident agent"): Promise<number> {
  const [pid] = await waitUntil(() => (residents().length === 1 ? residents() : undefined), what);
  return pid;
}

function lockedVmas(t: Target): number {
  return kernelMappings(t.pid).filter(isLockedVma).length;
}

test("a later run reaches the agent the former run left, and no Node starts on the host for it", async () => {
  const t = await startTarget({ mode: "sleep" });
  const { agentDir, bundleDir } = await deployed("reuse");
  const before = starts();
  await call(presumed(agentDir, 60), "lock", t.pid);
  expect(starts()).toBe(before + 1);
  expect(lockedVmas(t)).toBeGreaterThan(0);
  // The run ends: its connection closes, as when the provider's process exits.
  await closeAll();
  const resident = await theResident();
  expect(fs.lstatSync(path.join(bundleDir, SOCKET_NAME)).isSocket()).toBe(true);

  await call(presumed(agentDir, 60), "unlock", t.pid);
  await call(presumed(agentDir, 60), "status", t.pid);
  // Where the provider can guess the socket's path, it runs nothing on the host at all: this
  // transport's command would fail if it ran.
  const direct = new SshTransport(conn(), { agentCommand: "exit 97", persistent: true, lingerSeconds: 60, residentSockets: residentSocketGuesses(conn(), agentDir) });
  await call(direct, "status", t.pid);
  expect(starts()).toBe(before + 1);
  expect(residents()).toEqual([resident]);
  expect(lockedVmas(t)).toBe(0);
  await closeAll();

  // Two runs at once (cron beside an operator) share it, one request at a time.
  const a = presumed(agentDir, 60);
  await closeAll();
  const b = presumed(agentDir, 60);
  for (let i = 0; i < 3; i++) await Promise.all([call(a, "lock", t.pid), call(b, "unlock", t.pid), call(a, "status", t.pid)]);
  expect(starts()).toBe(before + 1);
  expect(t.state()).not.toMatch(/[tTZ]/);
  process.kill(resident, "SIGKILL");
  await closeAll();
});

test("it leaves after lingerSeconds without requests, and takes its socket with it", async () => {
  const t = await startTarget({ mode: "sleep" });
  const { agentDir, bundleDir } = await deployed("leave");
  await call(presumed(agentDir, 2), "lock", t.pid);
  expect(fs.lstatSync(path.join(bundleDir, SOCKET_NAME)).isSocket()).toBe(true);
  await closeAll();
  await waitUntil(() => (residents().length === 0 ? true : undefined), "the resident's exit", { timeoutMs: 20_000 });
  expect(fs.existsSync(path.join(bundleDir, SOCKET_NAME))).toBe(false);
  expect(lockedVmas(t)).toBeGreaterThan(0);
  expect(t.state()).not.toMatch(/[tTZ]/);
});

test("the socket of a dead resident is taken over by a new agent", async () => {
  const t = await startTarget({ mode: "sleep" });
  const { agentDir, bundleDir } = await deployed("stale");
  await call(presumed(agentDir, 60), "lock", t.pid);
  await closeAll();
  const dead = await theResident();
  process.kill(dead, "SIGKILL");
  await waitUntil(() => (residents().length === 0 ? true : undefined), "the resident's death");
  expect(fs.lstatSync(path.join(bundleDir, SOCKET_NAME)).isSocket()).toBe(true);
  const before = starts();
  await call(presumed(agentDir, 60), "unlock", t.pid);
  expect(starts()).toBe(before + 1);
  expect(lockedVmas(t)).toBe(0);
  await closeAll();
  const fresh = await theResident("the new resident");
  expect(fresh).not.toBe(dead);
  await call(presumed(agentDir, 60), "status", t.pid);
  expect(starts()).toBe(before + 1);
  process.kill(fresh, "SIGKILL");
  await closeAll();
});

test("no other user can reach the resident, and a folder others can enter gets no socket", async () => {
  const t = await startTarget({ mode: "sleep" });
  const { agentDir, bundleDir } = await deployed("private");
  await call(presumed(agentDir, 60), "lock", t.pid);
  await closeAll();
  const resident = await theResident();
  const socket = path.join(bundleDir, SOCKET_NAME);
  // Even with the folders above it opened up, the socket itself is the owner's alone.
  const opened = [agentDir, bundleDir];
  for (const d of opened) fs.chmodSync(d, 0o755);
  const probe = `require("net").connect(${JSON.stringify(socket)}).on("connect",()=>{console.log("connected");process.exit(0)}).on("error",(e)=>{console.log(e.code);process.exit(0)})`;
  const other = spawnSync("setpriv", ["--reuid", PLAIN_USER, "--regid", PLAIN_USER, "--init-groups", process.execPath, "-e", probe], { encoding: "utf8" });
  expect(other.stdout.trim()).toBe("EACCES");
  process.kill(resident, "SIGKILL");
  await waitUntil(() => (residents().length === 0 ? true : undefined), "the resident's death");
  fs.rmSync(socket);

  // The bundle folder is 0755 now: the agent serves its session and leaves no socket.
  const before = starts();
  await call(presumed(agentDir, 60), "unlock", t.pid);
  await closeAll();
  await waitUntil(() => (residents().length === 0 ? true : undefined), "the agent's exit");
  expect(fs.existsSync(socket)).toBe(false);
  expect(starts()).toBe(before + 1);
  expect(lockedVmas(t)).toBe(0);
});
