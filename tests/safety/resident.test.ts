// A resident agent (agent.lingerSeconds) killed in a later request, at every fault point:
// its guardian stub, forked in an earlier request and kept through the idle time between,
// still has the target running again, untraced, with no journal left, without anyone
// acting. The bundle runs here through its own bootstrap (as the provider starts it on a
// host), from a private folder; requests come over its socket.
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { BUNDLE_FILES, MANIFEST, bundleDir, loadBundle } from "../../provider/agent/bundle";
import { hostNodeCommand } from "../../provider/agent/command";
import { AgentReply, PROTOCOL_VERSION, SOCKET_NAME } from "../../src/agent/protocol";
import { hostArch } from "../../src/arch";
import { ensureBuilt } from "../e2e/lockmem-helpers";
import { FAULT_POINTS, journalsIn, procState, runLockmem, safetySuite } from "../support/safety";
import { descendants } from "../support/sshd";
import { isTraced } from "../support/smaps";
import { stressLabel } from "../support/stress";
import { stopAllTargets, waitUntil } from "../support/target";
import { startWaiters } from "../support/waiters";

jest.setTimeout(10 * 60_000);

const stateDir = safetySuite("resident");
let folder: string;
let command: string;

beforeAll(() => {
  ensureBuilt();
  const arch = hostArch()!;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-resident-safety-"));
  folder = path.join(base, "bundle");
  fs.mkdirSync(folder, { mode: 0o700 });
  for (const f of [...BUNDLE_FILES, MANIFEST]) fs.copyFileSync(path.join(bundleDir(arch), f), path.join(folder, f));
  command = `${hostNodeCommand(process.env.LOCKMEM_SYSTEM_NODE || "node", folder, loadBundle(arch, folder))} --serve --linger=60`;
});

afterAll(async () => {
  await stopAllTargets();
  if (folder) fs.rmSync(path.dirname(folder), { recursive: true, force: true });
});

/** Starts the agent as the provider does and ends its stdin session: it stays, on its socket. */
async function resident(killAt: string, env: NodeJS.ProcessEnv = {}): Promise<ChildProcess> {
  const socket = path.join(folder, SOCKET_NAME);
  fs.rmSync(socket, { force: true });
  const child = spawn("bash", ["-c", command], { env: { ...process.env, LOCKMEM_STATE_DIR: stateDir, LOCKMEM_TEST_KILL_AT: killAt, ...env }, stdio: ["pipe", "ignore", "inherit"] });
  child.stdin!.end();
  await waitUntil(() => fs.existsSync(socket) && fs.lstatSync(socket).isSocket(), "the resident's socket", { timeoutMs: 30_000 });
  return child;
}

/** Sends one request on a connection of its own; undefined when the agent closed it without a reply. */
function request(body: object): Promise<AgentReply | undefined> {
  return new Promise((resolve) => {
    const c = net.connect(path.join(folder, SOCKET_NAME));
    let text = "";
    c.on("data", (d: Buffer) => {
      text += d.toString("utf8");
      if (text.includes("\n")) {
        c.end();
        resolve(JSON.parse(text.slice(0, text.indexOf("\n"))) as AgentReply);
      }
    });
    c.on("error", () => undefined);
    c.on("close", () => resolve(undefined));
    c.write(JSON.stringify({ v: PROTOCOL_VERSION, ...body }) + "\n");
  });
}

test(`killed in its second request at every fault point: the target runs again, nobody acting (${stressLabel()})`, async () => {
  const w = await startWaiters(["epoll_wait", "nanosleep", "read"]);
  const target = { pid: w.pid };
  const running = (): boolean => !/[tT]/.test(procState(w.pid)) && !isTraced(w.pid) && journalsIn(stateDir).length === 0;
  for (const point of FAULT_POINTS) {
    // The first request (a lock: every point passed once) forks the guardian stub; the
    // second (an unlock) is killed at the point's second pass.
    const agent = await resident(`${point}:2`);
    const exited = new Promise<string | null>((resolve) => agent.on("exit", (_code, signal) => resolve(signal)));
    const locked = await request({ op: "lock", args: { target, mappings: { all: true } } });
    expect({ point, ok: locked?.ok }).toEqual({ point, ok: true });
    expect(await request({ op: "unlock", args: { target, mappings: { all: true } } })).toBeUndefined();
    expect({ point, signal: await exited }).toEqual({ point, signal: "SIGKILL" });
    await waitUntil(running, `process ${w.pid} running again after the resident died at ${point}`, { timeoutMs: 30_000 });
    // Whatever the kill left (locked or not), a new run converges.
    const again = await resident("none");
    expect((await request({ op: "unlock", args: { target, mappings: { all: true } } }))?.ok).toBe(true);
    again.kill("SIGTERM");
    await new Promise((r) => again.on("exit", r));
  }
  expect(Object.values(w.eintrs()).reduce((a, b) => a + b, 0)).toBe(0);
});

test("past its maximum age a busy resident gives up its socket and leaves once idle", async () => {
  const w = await startWaiters(["nanosleep"]);
  const agent = await resident("none", { LOCKMEM_RESIDENT_MAX_AGE_MS: "3000" });
  const exited = new Promise<number | null>((resolve) => agent.on("exit", (code) => resolve(code)));
  // Requests keep coming (lingerSeconds is 60): only the age ends it.
  const deadline = Date.now() + 20_000;
  let served = 0;
  while (fs.existsSync(path.join(folder, SOCKET_NAME)) && Date.now() < deadline) {
    const reply = await request({ op: "status", args: { target: { pid: w.pid } } });
    // Between the look at the path and the connect, it may just have retired.
    if (reply === undefined && !fs.existsSync(path.join(folder, SOCKET_NAME))) break;
    expect(reply?.ok).toBe(true);
    served++;
    await new Promise((r) => setTimeout(r, 200));
  }
  expect(served).toBeGreaterThan(5);
  // The socket went away while requests were still coming, long before lingerSeconds (60).
  expect(fs.existsSync(path.join(folder, SOCKET_NAME))).toBe(false);
  const exitedSoon = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r("still running"), 15_000))]);
  expect(exitedSoon).toBe(0);
});

test("a folder where the socket would go (same user, by mistake or on purpose): the agent serves its own session and does not linger", async () => {
  const w = await startWaiters(["nanosleep"]);
  const socket = path.join(folder, SOCKET_NAME);
  fs.rmSync(socket, { recursive: true, force: true });
  fs.mkdirSync(socket);
  try {
    const child = spawn("bash", ["-c", command], { env: { ...process.env, LOCKMEM_STATE_DIR: stateDir }, stdio: ["pipe", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString("utf8")));
    const code = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    child.stdin!.end(JSON.stringify({ v: PROTOCOL_VERSION, op: "status", args: { target: { pid: w.pid } } }) + "\n");
    expect(await code).toBe(0);
    expect((JSON.parse(out.split("\n")[0]) as AgentReply).ok).toBe(true);
    expect(fs.lstatSync(socket).isDirectory()).toBe(true);
    expect(fs.readdirSync(folder).filter((n) => n.startsWith(`${SOCKET_NAME}.`))).toEqual([]);
  } finally {
    fs.rmSync(socket, { recursive: true, force: true });
  }
});

test(`a target that is pid 1 of a child pid namespace, the lingering agent beside a second lockmem (the CLI) on it: every run done or EBUSY, no harm (${stressLabel()})`, async () => {
  const prefix = ["unshare", "--fork", "--pid", "--mount-proc"];
  const w = await startWaiters(["epoll_wait", "nanosleep", "read"], {
    prefix,
    resolvePid: (outer) => waitUntil(() => descendants(outer).find((pid) => fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "waiters"), "the waiters inside the namespace"),
  });
  expect(fs.readFileSync(`/proc/${w.pid}/status`, "utf8")).toMatch(/^NSpid:\s+\d+\s+1$/m);
  const agent = await resident("none");
  const target = { pid: w.pid };
  const outcomes: string[] = [];
  try {
    for (let i = 0; i < 6; i++) {
      const op = i % 2 === 0 ? "lock" : "unlock";
      const [viaResident, viaCli] = await Promise.all([request({ op, args: { target } }), runLockmem(stateDir, [op, "--pid", String(w.pid)])]);
      outcomes.push(viaResident?.ok ? "ok" : (viaResident?.error?.code ?? "no reply"), viaCli.code === 0 ? "ok" : `cli ${viaCli.code}: ${viaCli.stderr.trim().slice(0, 120)}`);
      expect(!/[tT]/.test(procState(w.pid)) && !isTraced(w.pid)).toBe(true);
    }
  } finally {
    agent.kill("SIGTERM");
    await new Promise((r) => agent.on("exit", r));
  }
  // The target lock serialises them: each run either did its work or was told EBUSY.
  expect(outcomes.filter((o) => o !== "ok" && o !== "EBUSY" && !/EBUSY|busy/i.test(o))).toEqual([]);
  expect(journalsIn(stateDir)).toEqual([]);
  expect(Object.values(w.eintrs()).reduce((a, b) => a + b, 0)).toBe(0);
});
