// LockedProcessMemory on SSH hosts (real sshd on 127.0.0.x), through the real Pulumi
// engine: the agent is deployed to fresh hosts on the first up, a tampered agent file is
// replaced and never run, drift is found and repaired, an unreachable host fails alone and
// converges on the next up, destroy unlocks everything, and no key lands in the state file.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory } from "../../provider";
import { countChanges, withStack } from "../support/stack";
import { SshFixture, startSshFixture } from "../support/sshd";
import { Target, startTarget, stopAllTargets, waitUntil } from "../support/target";
import { codeLocked, ensureBuilt, mappingsWith, nothingLocked, stackWorkDir, uniqueName } from "./lockmem-helpers";

jest.setTimeout(600_000);

const HOSTS = 3;
const work = stackWorkDir();
let fx: SshFixture;
let scratch: string;

beforeAll(async () => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-e2e-fleet-"));
  fs.mkdirSync(path.join(scratch, "bin"));
  // install: "auto" needs no agent on the hosts; the fixture wants a PATH folder and a sudo rule anyway.
  // Host 0 logs every session it starts (DEBUG1), to count the remote commands an operation costs.
  fx = await startSshFixture({ hosts: HOSTS, firstOctet: 150, agentBinDir: path.join(scratch, "bin"), agentWrapper: "/nonexistent/lockmem", debugHosts: [0] });
});

afterAll(async () => {
  await fx?.stop();
  await stopAllTargets();
  work.remove();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

function readManifest(): { version: string; id: string; files: Record<string, string> } {
  return JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "dist", "agent-bundle", "linux-x64", "manifest.json"), "utf8"));
}

test("fleet: deploy, lock every host, tamper, drift, unreachable host, destroy", async () => {
  const comms = Array.from({ length: HOSTS }, () => uniqueName("lmfleet"));
  const targets: Target[] = [];
  for (const comm of comms) targets.push(await startTarget({ comm, anonMb: 4 }));
  const agentDirs = fx.hosts.map((_, i) => path.join(scratch, `host-${i}`, "agents"));

  const program = (mappings?: { permissions: string[] }) => async () => {
    const out: Record<string, pulumi.Output<unknown>> = {};
    fx.hosts.forEach((h, i) => {
      const r = new LockedProcessMemory(`db${i}`, {
        connection: { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey, perDialTimeout: 3, dialErrorLimit: 2 },
        // One agent folder per host: the test hosts share this machine's file system.
        agent: { dir: agentDirs[i] },
        target: { name: comms[i] },
        ...(mappings ? { mappings } : {}),
      });
      out[`pid${i}`] = r.processes.apply((p) => p[0]?.pid);
      out[`bytes${i}`] = r.lockedBytes;
    });
    return out;
  };
  const base = program();
  const manifest = readManifest();
  const deployedDir = (i: number): string => path.join(agentDirs[i], `${manifest.version}-${manifest.id.slice(0, 16)}`);

  await withStack(base, async (s) => {
    // Fresh hosts get the agent; every target is locked; preview has nothing to do.
    for (const d of agentDirs) expect(fs.existsSync(d)).toBe(false);
    const created = await s.up({ program: base });
    expect(created.changes.create).toBe(HOSTS + 1);
    targets.forEach((t, i) => {
      expect(created.outputs[`pid${i}`]).toBe(t.pid);
      expect(created.outputs[`bytes${i}`]).toBeGreaterThan(0);
      expect(codeLocked(t.pid)).toBe(true);
    });
    for (let i = 0; i < HOSTS; i++) {
      expect(fs.readdirSync(agentDirs[i])).toEqual([path.basename(deployedDir(i))]); // no temp folder left
      expect(fs.statSync(deployedDir(i)).mode & 0o077).toBe(0);
    }
    expect(countChanges((await s.preview({ program: base, expectNoChanges: true })).changes)).toBe(0);

    // Once deployed, an operation in a new provider process starts the agent straight away:
    // one remote command on the host (the agent session), no probe before it.
    const commands = (): number => (fx.hosts[0].log().match(/Starting session: command/g) ?? []).length;
    const before = commands();
    expect(countChanges((await s.refresh()).changes)).toBe(0);
    expect(commands() - before).toBe(1);

    // The state file holds the connection only encrypted.
    const state = s.stateFileText();
    const keyBody = fx.userKey.privateKey.split("\n").filter((l) => l && !l.startsWith("-----"));
    for (const line of keyBody) expect(state).not.toContain(line);
    expect(state).not.toContain("BEGIN OPENSSH PRIVATE KEY");

    // A tampered agent file is detected before it runs, replaced, and the operation goes on.
    const marker = path.join(scratch, "tampered-agent-ran");
    const js = path.join(deployedDir(0), "lockmem-agent.js");
    fs.appendFileSync(js, `\nrequire("fs").writeFileSync(${JSON.stringify(marker)}, "ran");\n`);
    const refreshed = await s.refresh();
    expect(countChanges(refreshed.changes)).toBe(0);
    expect(fs.existsSync(marker)).toBe(false);
    const { createHash } = await import("crypto");
    expect(createHash("sha256").update(fs.readFileSync(js)).digest("hex")).toBe(manifest.files["lockmem-agent.js"]);

    // Target on host 1 restarted: refresh shows it, preview plans an update, up locks the new one.
    await targets[1].stop();
    targets[1] = await startTarget({ comm: comms[1], anonMb: 4 });
    expect((await s.refresh()).changes.update).toBe(1);
    expect((await s.preview({ program: base })).changes.update).toBe(1);
    const repaired = await s.up({ program: base });
    expect(repaired.changes.update).toBe(1);
    expect(repaired.outputs.pid1).toBe(targets[1].pid);
    expect(codeLocked(targets[1].pid)).toBe(true);

    // Host 2 unreachable (its sshd stopped) while every resource changes: a clear error for
    // host 2, the other hosts done; once it is back, the next up converges.
    const wider = program({ permissions: ["r-x", "rw-"] });
    const h2 = fx.hosts[2];
    process.kill(h2.pid, "SIGSTOP");
    let failure = "";
    try {
      failure = await s.up({ program: wider }).then(
        () => "",
        (e: Error) => e.message,
      );
    } finally {
      process.kill(h2.pid, "SIGCONT");
    }
    expect(failure).toMatch(new RegExp(`db2.*ssh root@${h2.address.replace(/\./g, "\\.")}:${h2.port}`, "s"));
    expect(failure).toMatch(/no SSH handshake|gave up|timed out|did not finish/);
    for (const i of [0, 1]) expect(mappingsWith(targets[i].pid, "rw-").unlocked).toBe(0);
    expect(mappingsWith(targets[2].pid, "rw-").locked).toBe(0);
    const converged = await s.up({ program: wider });
    expect(converged.changes.update).toBe(1);
    expect(mappingsWith(targets[2].pid, "rw-").unlocked).toBe(0);
    expect(countChanges((await s.preview({ program: wider, expectNoChanges: true })).changes)).toBe(0);

    // destroy unlocks every target on every host.
    const destroyed = await s.destroy();
    expect(destroyed.changes.delete).toBe(HOSTS + 1);
    for (const t of targets) expect(nothingLocked(t.pid)).toBe(true);
  }, { workDir: work.workDir });
});

test("agent.lingerSeconds: later operations reach the lingering agent with no remote command at all; it leaves when idle", async () => {
  const comm = uniqueName("lmlinger");
  const t = await startTarget({ comm, anonMb: 4 });
  const agentDir = path.join(scratch, "linger", "agents");
  const h = fx.hosts[0];
  const program = async (): Promise<Record<string, pulumi.Output<unknown>>> => {
    const r = new LockedProcessMemory("db", {
      connection: { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey },
      agent: { dir: agentDir, lingerSeconds: 20 },
      target: { name: comm },
    });
    return { bytes: r.lockedBytes };
  };
  const commands = (): number => (h.log().match(/Starting session: command/g) ?? []).length;
  const socket = (): string => path.join(agentDir, fs.readdirSync(agentDir).find((d) => !d.startsWith("node-"))!, "agent.sock");
  await withStack(program, async (s) => {
    expect((await s.up({ program })).changes.create).toBe(2);
    expect(codeLocked(t.pid)).toBe(true);
    expect(fs.lstatSync(socket()).isSocket()).toBe(true);
    // Each operation is a new provider process: it opens the agent's socket through sshd.
    const before = commands();
    expect(countChanges((await s.refresh()).changes)).toBe(0);
    expect(countChanges((await s.preview({ program, expectNoChanges: true })).changes)).toBe(0);
    expect((await s.destroy()).changes.delete).toBe(2);
    expect(commands() - before).toBe(0);
    expect(nothingLocked(t.pid)).toBe(true);
  }, { workDir: work.workDir });
  // 20 idle seconds later it is gone, its socket with it.
  await waitUntil(() => !fs.existsSync(socket()), "the lingering agent to leave", { timeoutMs: 60_000, intervalMs: 200 });
});

test("a host with an old Node.js and a glibc too old for the runtime gets a clear error naming the host and what is missing; nothing is uploaded", async () => {
  const bin = path.join(scratch, "old-node-bin");
  fs.mkdirSync(bin, { recursive: true });
  // Stand in for an old distribution's node and glibc, first on the sessions' PATH.
  fs.writeFileSync(path.join(bin, "node"), '#!/bin/sh\necho v16.20.2\n', { mode: 0o755 });
  fs.writeFileSync(path.join(bin, "getconf"), '#!/bin/sh\necho glibc 2.17\n', { mode: 0o755 });
  const old = await startSshFixture({ hosts: 1, firstOctet: 160, agentBinDir: bin, agentWrapper: "/nonexistent/lockmem" });
  try {
    const t = await startTarget({});
    const h = old.hosts[0];
    const agentDir = path.join(scratch, "old-host", "agents");
    const program = async () => {
      new LockedProcessMemory("old", {
        connection: { host: h.address, port: h.port, user: "root", privateKey: old.userKey.privateKey, hostKey: h.hostKey },
        agent: { dir: agentDir },
        target: { pid: t.pid },
      });
      return {};
    };
    await withStack(program, async (s) => {
      const message = await s.up({ program }).then(
        () => "",
        (e: Error) => e.message,
      );
      expect(message).toContain(`ssh root@${h.address}:${h.port}`);
      expect(message).toMatch(/has no Node\.js >= 18 \(\S+\/node is v16\.20\.2\) and the Node\.js runtime lockmem brings needs glibc >= 2\.28, while this host has glibc 2\.17/);
      expect(message).toMatch(/install Node\.js 18 or later/);
      expect(fs.existsSync(agentDir)).toBe(false);
      expect(nothingLocked(t.pid)).toBe(true);
    }, { workDir: work.workDir });
  } finally {
    await old.stop();
  }
});
