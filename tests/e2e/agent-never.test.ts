// agent: { install: "never", path } through the real engine: the provider runs the agent
// installed at `path` (on an sshd test host, and on this machine), checks that it speaks
// this package's protocol version, and refuses a wrong path or a wrong-version agent with
// an error naming the host and the fix, having changed nothing.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { repoRoot } from "../support/repo";
import { LockedProcessMemory } from "../../provider";
import { countChanges, withStack } from "../support/stack";
import { SshFixture, startSshFixture } from "../support/sshd";
import { AgentBundle, buildAgentBundle } from "../support/agent-bundle";
import { startTarget, stopAllTargets } from "../support/target";
import { codeLocked, ensureBuilt, nothingLocked, stackWorkDir } from "./lockmem-helpers";

jest.setTimeout(600_000);

const REPO = repoRoot();
const work = stackWorkDir();
let bundle: AgentBundle;
let fx: SshFixture;
let scratch: string;

beforeAll(async () => {
  ensureBuilt();
  // An installed agent on the host: the agent bundle `npm pack` ships, behind a `lockmem`
  // command run by the host's own Node.js (tests/support/agent-bundle.ts).
  bundle = await buildAgentBundle();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-e2e-never-"));
  fs.chmodSync(scratch, 0o755);
  fx = await startSshFixture({ hosts: 1, firstOctet: 185, agentBinDir: bundle.binDir, agentWrapper: bundle.wrapper });
});

afterAll(async () => {
  await fx?.stop();
  await stopAllTargets();
  work.remove();
  bundle?.remove();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

/**
 * A `lockmem` of another protocol version (as a newer release would be): it answers every
 * request, the version handshake included, with protocol v2 and records that it ran.
 */
function otherVersionAgent(): { path: string; ranFile: string } {
  const dir = path.join(scratch, "v2");
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const ranFile = path.join(dir, "requests");
  const file = path.join(dir, "lockmem");
  fs.writeFileSync(
    file,
    `#!/bin/sh\nread -r request\necho "$request" >> ${ranFile}\necho '{"v":2,"ok":true,"result":{"protocol":2,"agent":"9.0.0","node":"v22.0.0","arch":"x64","uid":0}}'\n`,
    { mode: 0o755 },
  );
  return { path: file, ranFile };
}

test('install "never": runs the agent at agent.path on an SSH host and locally; a wrong path or protocol fails clearly and changes nothing', async () => {
  const remoteTarget = await startTarget({ anonMb: 4 });
  const localTarget = await startTarget({ anonMb: 4 });
  const h = fx.hosts[0];
  const where = `ssh root@${h.address}:${h.port}`;
  const program = (remotePath: string, localPath: string | undefined) => async () => {
    const remote = new LockedProcessMemory("remote", {
      connection: { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey },
      agent: { install: "never", path: remotePath },
      target: { pid: remoteTarget.pid },
    });
    const out: Record<string, pulumi.Output<unknown>> = { remoteBytes: remote.lockedBytes };
    if (localPath) {
      const local = new LockedProcessMemory("local", { agent: { install: "never", path: localPath }, target: { pid: localTarget.pid } });
      out.localBytes = local.lockedBytes;
    }
    return out;
  };
  const upError = async (s: { up: (o: { program: () => Promise<Record<string, unknown>> }) => Promise<unknown> }, p: () => Promise<Record<string, unknown>>): Promise<string> =>
    s.up({ program: p }).then(
      () => "",
      (e: Error) => e.message,
    );

  await withStack(program(bundle.wrapper, undefined), async (s) => {
    // A path the check refuses ("~" is never expanded): preview names the field, no host is asked.
    const tilde = await s.preview({ program: program("~/bin/lockmem", undefined) }).then(
      () => "",
      (e: Error) => e.message,
    );
    expect(tilde).toMatch(/property agent .*agent\.path: "~" is not expanded/);
    expect(fx.hosts[0].log()).not.toMatch(/Accepted publickey/);

    // A path with nothing there: the host and the field to fix are named; nothing locked.
    const missing = await upError(s, program("/nonexistent/bin/lockmem", undefined));
    expect(missing).toContain(where);
    expect(missing).toMatch(/agent was not found/);
    expect(missing).toMatch(/agent\.path/);
    expect(nothingLocked(remoteTarget.pid)).toBe(true);

    // An agent of another protocol version: refused at the version handshake, before any
    // request that could change something reaches it.
    const other = otherVersionAgent();
    const mismatch = await upError(s, program(other.path, undefined));
    expect(mismatch).toContain(where);
    expect(mismatch).toMatch(/protocol mismatch: the agent on ssh root@\S+ speaks protocol v2, the caller speaks v1/);
    expect(mismatch).toMatch(/upgrade the caller|install an older lockmem/);
    const requests = fs.readFileSync(other.ranFile, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { op: string });
    expect(requests.map((r) => r.op)).toEqual(["version"]);
    expect(nothingLocked(remoteTarget.pid)).toBe(true);

    // Locally too: this checkout's bin/lockmem, and a wrong path.
    const localMissing = await upError(s, program(bundle.wrapper, path.join(scratch, "no-such-lockmem")));
    expect(localMissing).toMatch(/local/);
    expect(localMissing).toMatch(/no-such-lockmem/);
    expect(localMissing).toMatch(/agent\.path/);
    expect(nothingLocked(localTarget.pid)).toBe(true);
    // (The remote resource was created by that up: it was given the right agent.)
    expect(codeLocked(remoteTarget.pid)).toBe(true);

    // The right agents: both targets locked, and a preview right after has nothing to do.
    const good = program(bundle.wrapper, path.join(REPO, "bin", "lockmem"));
    const created = await s.up({ program: good });
    expect(created.outputs.remoteBytes).toBeGreaterThan(0);
    expect(created.outputs.localBytes).toBeGreaterThan(0);
    expect(codeLocked(remoteTarget.pid)).toBe(true);
    expect(codeLocked(localTarget.pid)).toBe(true);
    expect(countChanges((await s.preview({ program: good, expectNoChanges: true })).changes)).toBe(0);

    // destroy runs the same agents to unlock.
    await s.destroy();
    expect(nothingLocked(remoteTarget.pid)).toBe(true);
    expect(nothingLocked(localTarget.pid)).toBe(true);
  }, { workDir: work.workDir });
});
