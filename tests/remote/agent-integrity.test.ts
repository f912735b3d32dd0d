// The deployed agent runs exactly the addon bytes its bootstrap hashed (issue 14, item 1),
// over a real sshd: an addon swapped in after the version reply never runs, a deleted one
// is not looked for elsewhere, and a bundle folder that another user could change is
// refused before anything is loaded. The "other" addon is a .so whose constructor writes a
// marker file: dlopen runs it before Node even looks at the module.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ensureAgent } from "../../provider/agent/deploy";
import { SshConnection, SshTransport, closeAll } from "../../provider/transport/ssh";
import { AgentReply, PROTOCOL_VERSION } from "../../src/agent/protocol";
import { ensureBuilt } from "../e2e/lockmem-helpers";
import { SUDO_USER, SshFixture, startSshFixture } from "../support/sshd";
import { startTarget, stopAllTargets } from "../support/target";

jest.setTimeout(120_000);

let fx: SshFixture;
let scratch: string;
let evil: string;
let marker: string;

beforeAll(async () => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-integrity-"));
  fs.mkdirSync(path.join(scratch, "bin"));
  marker = path.join(scratch, "other-addon-ran");
  const src = path.join(scratch, "other.c");
  fs.writeFileSync(src, `#include <stdio.h>\n__attribute__((constructor)) static void ran(void) { FILE *f = fopen(${JSON.stringify(marker)}, "w"); if (f) { fputs("ran\\n", f); fclose(f); } }\n`);
  evil = path.join(scratch, "other.so");
  execFileSync("cc", ["-shared", "-fPIC", "-o", evil, src]);
  // SUDO_USER may run the host's node as root (what sudo: true with the deployed agent
  // needs); host 1's sessions find no node.
  fx = await startSshFixture({ hosts: 2, firstOctet: 196, agentBinDir: path.join(scratch, "bin"), agentWrapper: fs.realpathSync("/usr/bin/node"), noNodeHosts: [1] });
});

afterAll(async () => {
  await closeAll();
  await fx?.stop();
  await stopAllTargets();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

function conn(extra: Partial<SshConnection> = {}, host = 0): SshConnection {
  const h = fx.hosts[host];
  return { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey, ...extra };
}

/** Deploys into `agentDir` and starts one agent session; resolves once its version reply came. */
async function startedAgent(agentDir: string, c: SshConnection = conn()): Promise<{ transport: SshTransport; dir: string }> {
  const deployed = await ensureAgent(c, { dir: agentDir, timeoutMs: 60_000, force: true });
  const transport = new SshTransport(c, { agentCommand: deployed.command, persistent: true });
  const version = await transport.run({ v: PROTOCOL_VERSION, op: "version" }, { timeoutMs: 60_000 });
  expect(version.ok).toBe(true);
  return { transport, dir: deployed.dir };
}

async function plan(transport: SshTransport, pid: number): Promise<AgentReply> {
  return transport.run({ v: PROTOCOL_VERSION, op: "plan", args: { target: { pid } } }, { timeoutMs: 60_000 });
}

test("an addon renamed over lockmem.node after the version reply never runs", async () => {
  fs.rmSync(marker, { force: true });
  const t = await startTarget({});
  const { transport, dir } = await startedAgent(path.join(scratch, "swap", "agents"));
  const staged = path.join(dir, ".staged");
  fs.copyFileSync(evil, staged);
  fs.renameSync(staged, path.join(dir, "lockmem.node"));
  const reply = await plan(transport, t.pid);
  expect(fs.existsSync(marker)).toBe(false);
  expect(reply.ok).toBe(true);
});

test("a deleted addon is not looked for in build/Release folders above the bundle", async () => {
  fs.rmSync(marker, { force: true });
  const t = await startTarget({});
  const agentDir = path.join(scratch, "deleted", "agents");
  const decoy = path.join(agentDir, "build", "Release");
  fs.mkdirSync(decoy, { recursive: true, mode: 0o700 });
  fs.copyFileSync(evil, path.join(decoy, "lockmem.node"));
  const { transport, dir } = await startedAgent(agentDir);
  fs.unlinkSync(path.join(dir, "lockmem.node"));
  const reply = await plan(transport, t.pid);
  expect(fs.existsSync(marker)).toBe(false);
  expect(reply.ok).toBe(true);
});

test("a bundle below a folder every user can write is refused before the addon loads", async () => {
  const open = path.join(scratch, "world-writable");
  fs.mkdirSync(open, { mode: 0o777 });
  fs.chmodSync(open, 0o777);
  const message = await startedAgent(path.join(open, "agents")).then(
    () => "",
    (e: Error) => e.message,
  );
  expect(message).toMatch(new RegExp(`refusing to run the lockmem agent from .*: ${open.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is writable by every user \\(mode 777\\)`));
});

test("a bundle folder that belongs to another user is refused", async () => {
  const agentDir = path.join(scratch, "foreign", "agents");
  const { dir } = await startedAgent(agentDir);
  await closeAll();
  fs.chownSync(dir, 65534, 65534);
  const message = await startedAgent(agentDir).then(
    () => "",
    (e: Error) => e.message,
  );
  expect(message).toMatch(/belongs to uid 65534/);
});

test("with sudo the agent runs as root from the SSH user's own folder, loading the verified bytes", async () => {
  fs.rmSync(marker, { force: true });
  const t = await startTarget({});
  fs.chmodSync(scratch, 0o755);
  const own = path.join(scratch, "sudo-user");
  fs.mkdirSync(own, { mode: 0o700 });
  const uid = Number(execFileSync("id", ["-u", SUDO_USER], { encoding: "utf8" }).trim());
  fs.chownSync(own, uid, uid);
  const { transport, dir } = await startedAgent(path.join(own, "agents"), conn({ user: SUDO_USER, sudo: true }));
  expect(fs.statSync(dir).uid).toBe(uid);
  // The user can still rename another .so over the addon: root never loads it.
  const staged = path.join(dir, ".staged");
  fs.copyFileSync(evil, staged);
  fs.renameSync(staged, path.join(dir, "lockmem.node"));
  const reply = await plan(transport, t.pid);
  expect(fs.existsSync(marker)).toBe(false);
  expect(reply.ok).toBe(true);
});

test("with sudo a host without Node.js is refused: no runtime is uploaded for root to run", async () => {
  const message = await ensureAgent(conn({ user: SUDO_USER, sudo: true }, 1), { dir: path.join(scratch, "sudo-user", "agents-nonode"), timeoutMs: 60_000 }).then(
    () => "",
    (e: Error) => e.message,
  );
  expect(message).toMatch(/ssh lockmem-sudo@127\.0\.0\.197:2222: with sudo: true the lockmem agent runs with the host's own Node\.js >= 18 \(a root-owned binary\), and `node` is not on the PATH of SSH sessions/);
  expect(fs.existsSync(path.join(scratch, "sudo-user", "agents-nonode"))).toBe(false);
});
