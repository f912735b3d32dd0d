// customTimeouts through the real engine. Dynamic providers are not given the engine's
// timeout (the Node.js SDK drops CreateRequest.timeout), so LockedProcessMemory passes
// opts.customTimeouts to the provider as an input; these tests check that each operation
// (create, update, delete) ends at its deadline against a host that never answers: a
// silent TCP server on loopback, and a real sshd that is stopped (SIGSTOP) mid-story.
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory } from "../../provider";
import { withStack } from "../support/stack";
import { SshFixture, startSshFixture } from "../support/sshd";
import { Target, startTarget, stopAllTargets } from "../support/target";
import { codeLocked, ensureBuilt, mappingsWith, nothingLocked, stackWorkDir } from "./lockmem-helpers";

jest.setTimeout(600_000);

const SILENT_HOST = "127.0.0.182";
const work = stackWorkDir();
let fx: SshFixture;
let scratch: string;

beforeAll(async () => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-e2e-timeouts-"));
  fs.mkdirSync(path.join(scratch, "bin"));
  fx = await startSshFixture({ hosts: 1, firstOctet: 180, agentBinDir: path.join(scratch, "bin"), agentWrapper: "/nonexistent/lockmem" });
});

afterAll(async () => {
  await fx?.stop();
  await stopAllTargets();
  work.remove();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

async function failureOf(p: Promise<unknown>): Promise<{ message: string; ms: number }> {
  const started = Date.now();
  const message = await p.then(
    () => "",
    (e: Error) => e.message,
  );
  return { message, ms: Date.now() - started };
}

test("create against a host that never answers ends at customTimeouts.create, with the host and the deadline in the error", async () => {
  // Accepts TCP, never says a word: what a hung host or a black-holed port looks like.
  const sockets: { opened: number; closed?: number; socket: net.Socket }[] = [];
  const silent = net.createServer((s) => {
    const seen: { opened: number; closed?: number; socket: net.Socket } = { opened: Date.now(), socket: s };
    sockets.push(seen);
    s.on("close", () => (seen.closed = Date.now()));
    s.on("error", () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    silent.once("error", reject);
    silent.listen(0, SILENT_HOST, resolve);
  });
  const port = (silent.address() as net.AddressInfo).port;
  const t = await startTarget({});
  const program = async () => {
    new LockedProcessMemory(
      "hung",
      {
        // Without a deadline this would dial for the default 120 s: one dial waits up to
        // 60 s and attempts are unlimited, so only the operation's deadline ends it.
        connection: { host: SILENT_HOST, port, user: "root", privateKey: fx.userKey.privateKey, hostKey: fx.hosts[0].hostKey, perDialTimeout: 60, dialErrorLimit: -1 },
        agent: { dir: path.join(scratch, "hung-agents") },
        target: { pid: t.pid },
      },
      { customTimeouts: { create: "3s" } },
    );
    return {};
  };
  try {
    await withStack(program, async (s) => {
      const { message, ms } = await failureOf(s.up({ program }));
      expect(message).toContain(`ssh root@${SILENT_HOST}:${port}`);
      expect(message).toMatch(/deadline/);
      expect(message).toMatch(/customTimeouts\.create/);
      // The provider's own time at the host: from its first TCP connection to the last close.
      expect(sockets.length).toBeGreaterThan(0);
      const first = Math.min(...sockets.map((x) => x.opened));
      const last = Math.max(...sockets.map((x) => x.closed ?? Date.now()));
      console.log(`create with customTimeouts.create 3s against a silent host: ${last - first} ms at the host, up failed after ${ms} ms`);
      expect(last - first).toBeLessThan(4_000);
      expect(last - first).toBeGreaterThan(2_000);
      expect(ms).toBeLessThan(30_000);
      // Nothing was created, nothing changed.
      const state = await s.exportState();
      expect((state.deployment.resources ?? []).filter((r: { urn: string }) => r.urn.endsWith("LockedProcessMemory:Resource::hung"))).toEqual([]);
      expect(nothingLocked(t.pid)).toBe(true);
    }, { workDir: work.workDir });
  } finally {
    for (const x of sockets) x.socket.destroy();
    await new Promise((r) => silent.close(r));
  }
});

test("update and delete against a host that stopped answering end at their customTimeouts; the next destroy converges", async () => {
  const h = fx.hosts[0];
  const t: Target = await startTarget({ anonMb: 4 });
  const program = (mappings?: { permissions: string[] }) => async () => {
    const r = new LockedProcessMemory(
      "db",
      {
        connection: { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey, perDialTimeout: 60, dialErrorLimit: -1 },
        agent: { dir: path.join(scratch, "agents") },
        target: { pid: t.pid },
        ...(mappings ? { mappings } : {}),
      },
      { customTimeouts: { update: "3s", delete: "4s" } },
    );
    return { bytes: r.lockedBytes } as Record<string, pulumi.Output<unknown>>;
  };
  const base = program();
  const wider = program({ permissions: ["r-x", "rw-"] });
  await withStack(base, async (s) => {
    await s.up({ program: base });
    expect(codeLocked(t.pid)).toBe(true);

    process.kill(h.pid, "SIGSTOP");
    let update: { message: string; ms: number };
    let destroy: { message: string; ms: number };
    try {
      update = await failureOf(s.up({ program: wider }));
      destroy = await failureOf(s.destroy());
    } finally {
      process.kill(h.pid, "SIGCONT");
    }
    console.log(`against a stopped sshd: up (customTimeouts.update 3s) failed after ${update.ms} ms, destroy (delete 4s) after ${destroy.ms} ms`);
    for (const [f, op] of [[update, "update"], [destroy, "delete"]] as const) {
      expect(f.message).toContain(`ssh root@${h.address}:${h.port}`);
      expect(f.message).toMatch(new RegExp(`customTimeouts\\.${op}`));
      // The engine itself takes a few seconds per operation; the default deadline is 120 s.
      expect(f.ms).toBeLessThan(30_000);
    }
    // Nothing changed on the host while it was cut off; once it answers, destroy converges.
    expect(mappingsWith(t.pid, "rw-").locked).toBe(0);
    expect(codeLocked(t.pid)).toBe(true);
    await s.destroy();
    expect(nothingLocked(t.pid)).toBe(true);
  }, { workDir: work.workDir });
});
