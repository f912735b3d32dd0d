// The tarball is the product (issue 16): `npm pack` of this checkout, installed as a user
// would into a fresh folder (with @pulumi/pulumi, none of our devDependencies) with a PATH
// that has no compiler, then the real engine runs a program from that folder
// (tests/fixtures/package-app/run.js): on an sshd host whose sessions find no node at all
// the provider brings its pinned Node.js runtime; on a host with Node.js it uploads none; a
// tampered runtime is replaced, never run; with the package's addon folder removed remote
// hosts still work and a local target fails with a clear error. `npm pack` rebuilds dist/
// and prebuilds/ of this checkout from scratch (prepack): run it alone.
import { execFileSync, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { repoRoot } from "../support/repo";
import { NODE_RUNTIMES, runtimeFolderName } from "../../provider/agent/runtime";
import { SshFixture, startSshFixture } from "../support/sshd";
import { Target, startTarget, stopAllTargets, waitUntil } from "../support/target";
import { codeLocked, nothingLocked } from "./lockmem-helpers";

jest.setTimeout(1_200_000);

const REPO = repoRoot();
const RUNTIME = runtimeFolderName("x64");
let work: string;
let tarball: string;
let app: string;
let env: NodeJS.ProcessEnv;
let fx: SshFixture;
const times: Record<string, number> = {};

function onPath(name: string): string {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const f = path.join(dir, name);
    if (dir && fs.existsSync(f)) return f;
  }
  throw new Error(`${name} is not on PATH: run \`source scripts/toolchain.sh\` first`);
}

function sha256(file: string): string {
  return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

function timed<T>(name: string, fn: () => T): T {
  const started = Date.now();
  try {
    return fn();
  } finally {
    times[name] = Date.now() - started;
  }
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-package-"));
  // As a maintainer publishes it: prepack builds the addon, the JS and the agent bundle.
  timed("pack", () => execFileSync("npm", ["pack", "--pack-destination", work], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] }));
  tarball = path.join(work, fs.readdirSync(work).find((f) => f.endsWith(".tgz"))!);
  times.tarballBytes = fs.statSync(tarball).size;

  // A user's PATH: Node.js, npm, the Pulumi CLI (with its dynamic-provider plugin) and sh; no compiler.
  const bin = path.join(work, "bin");
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, "node"));
  fs.symlinkSync(onPath("pulumi"), path.join(bin, "pulumi"));
  fs.symlinkSync(onPath("pulumi-resource-pulumi-nodejs"), path.join(bin, "pulumi-resource-pulumi-nodejs"));
  fs.symlinkSync("/bin/sh", path.join(bin, "sh"));
  const npmCli = fs.realpathSync(onPath("npm"));
  fs.writeFileSync(path.join(bin, "npm"), `#!/bin/sh\nexec ${process.execPath} ${npmCli} "$@"\n`, { mode: 0o755 });
  app = path.join(work, "app");
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "lockmem-user-app", private: true }) + "\n");
  env = {
    PATH: bin,
    HOME: process.env.HOME,
    PULUMI_HOME: path.join(work, "pulumi-home"),
    PULUMI_CONFIG_PASSPHRASE: "lockmem-package-test",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    // Our engine shim (scripts/toolchain.sh) runs the dynamic provider of this SDK.
    LOCKMEM_PULUMI_SDK_DIR: path.join(app, "node_modules", "@pulumi", "pulumi"),
  };
  // This machine's TLS setup (a CA of its own): the registry is reached through it.
  for (const k of ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR"]) if (process.env[k]) env[k] = process.env[k];
  const sdk = (JSON.parse(fs.readFileSync(path.join(REPO, "node_modules", "@pulumi", "pulumi", "package.json"), "utf8")) as { version: string }).version;
  timed("install", () => execFileSync("npm", ["install", "--no-audit", "--no-fund", tarball, `@pulumi/pulumi@${sdk}`], { cwd: app, env, stdio: ["ignore", "pipe", "pipe"] }));
  fs.copyFileSync(path.join(REPO, "tests", "fixtures", "package-app", "run.js"), path.join(app, "run.js"));

  const hostBin = path.join(work, "host-bin");
  fs.mkdirSync(hostBin);
  // Host 0's sessions find no node (mount namespace); host 1 has the machine's Node.js.
  fx = await startSshFixture({ hosts: 2, firstOctet: 200, agentBinDir: hostBin, agentWrapper: "/nonexistent/lockmem", noNodeHosts: [0] });
});

afterAll(async () => {
  await fx?.stop();
  await stopAllTargets();
  if (work) fs.rmSync(work, { recursive: true, force: true });
  process.stdout.write(`package numbers (ms, bytes): ${JSON.stringify(times)}\n`);
});

interface OpLine {
  op: string;
  ms: number;
  changes?: Record<string, number>;
  outputs?: Record<string, unknown>;
  error?: string;
}

interface ResourceSpec {
  name: string;
  host?: number;
  agentDir?: string;
  lingerSeconds?: number;
  target: { pid: number };
}

/** Runs the user's program in the app folder: the stack `stack`, the given operations in order. */
function runApp(stack: string, resources: ResourceSpec[], ops: string[]): OpLine[] {
  const backend = path.join(work, `backend-${stack}`);
  fs.mkdirSync(backend, { recursive: true });
  const spec = {
    stack,
    backend,
    ops,
    resources: resources.map((r) => {
      const h = r.host === undefined ? undefined : fx.hosts[r.host];
      return {
        name: r.name,
        agentDir: r.agentDir,
        lingerSeconds: r.lingerSeconds,
        target: r.target,
        connection: h ? { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey } : undefined,
      };
    }),
  };
  const r = spawnSync(process.execPath, ["run.js", JSON.stringify(spec)], { cwd: app, env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`run.js exited ${r.status}: ${r.stderr}`);
  return r.stdout.trim().split("\n").map((l) => JSON.parse(l) as OpLine);
}

function ok(line: OpLine): OpLine {
  if (line.error) throw new Error(`${line.op} failed: ${line.error}`);
  return line;
}

const changed = (line: OpLine): number => Object.entries(line.changes ?? {}).filter(([k]) => k !== "same").reduce((n, [, v]) => n + v, 0);

test("the tarball holds the built package and nothing else, and installs without a compiler", () => {
  for (const tool of ["g++", "cc", "make", "python3"]) {
    expect(spawnSync("/bin/sh", ["-c", `command -v ${tool}`], { env }).status).not.toBe(0);
  }
  const entries = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).trim().split("\n");
  const allowed = /^package\/(package\.json|README\.md|LICENSE|bin\/lockmem|dist\/(src|provider)\/.+\.(js|d\.ts)|dist\/agent-bundle\/linux-(x64|arm64)\/(lockmem-agent\.js|lockmem\.node|manifest\.json)|prebuilds\/linux-(x64|arm64)\/node\.napi\.glibc\.node)$/;
  expect(entries.filter((e) => !allowed.test(e))).toEqual([]);
  for (const needed of ["dist/provider/index.js", "dist/provider/impl/index.js", "dist/src/agent/main.js", "dist/agent-bundle/linux-x64/manifest.json", "dist/agent-bundle/linux-arm64/manifest.json", "prebuilds/linux-x64/node.napi.glibc.node", "prebuilds/linux-arm64/node.napi.glibc.node", "bin/lockmem"]) {
    expect(entries).toContain(`package/${needed}`);
  }
  const installed = path.join(app, "node_modules", "pulumi-lockmem");
  const pkg = JSON.parse(fs.readFileSync(path.join(installed, "package.json"), "utf8")) as { scripts?: Record<string, string>; os?: string[]; dependencies: Record<string, string> };
  for (const hook of ["preinstall", "install", "postinstall"]) expect(pkg.scripts?.[hook]).toBeUndefined();
  expect(pkg.os).toBeUndefined();
  expect(pkg.dependencies["node-gyp-build"]).toBeDefined();
  expect(fs.existsSync(path.join(installed, "build"))).toBe(false);
  // Each architecture's agent bundle is exactly what its manifest says, with that architecture's addon.
  for (const platform of ["linux-x64", "linux-arm64"]) {
    const bundle = path.join(installed, "dist", "agent-bundle", platform);
    const manifest = JSON.parse(fs.readFileSync(path.join(bundle, "manifest.json"), "utf8")) as { arch: string; files: Record<string, string> };
    expect(manifest.arch).toBe(platform);
    expect(Object.keys(manifest.files).sort()).toEqual(["lockmem-agent.js", "lockmem.node"]);
    for (const [f, sum] of Object.entries(manifest.files)) expect(sha256(path.join(bundle, f))).toBe(sum);
    expect(fs.readFileSync(path.join(bundle, "lockmem.node")).equals(fs.readFileSync(path.join(installed, "prebuilds", platform, "node.napi.glibc.node")))).toBe(true);
  }
});

test("a host without Node.js gets the pinned runtime once; refresh shows no drift; a tampered runtime is replaced, never run; destroy unlocks", async () => {
  const t: Target = await startTarget({});
  const agentDir = path.join(work, "host0-agents");
  const runtime = path.join(agentDir, RUNTIME, "node");
  const resources = [{ name: "nonode", host: 0, agentDir, target: { pid: t.pid } }];

  const [up, refresh, again] = runApp("nonode", resources, ["up", "refresh", "up"]);
  times.firstUpWithoutNode = ok(up).ms;
  expect(up.changes?.create).toBe(2);
  expect(up.outputs?.nonodeBytes).toBeGreaterThan(0);
  expect(codeLocked(t.pid)).toBe(true);
  expect(sha256(runtime)).toBe(NODE_RUNTIMES.x64.nodeSha256);
  expect(changed(ok(refresh))).toBe(0);
  times.laterUpWithoutNode = ok(again).ms;
  expect(changed(again)).toBe(0);

  // Nothing is uploaded again once the host has it.
  const inode = fs.statSync(runtime).ino;
  const [later] = runApp("nonode", resources, ["refresh"]);
  expect(changed(ok(later))).toBe(0);
  expect(fs.statSync(runtime).ino).toBe(inode);

  // A runtime binary changed on the host is refused before it runs, then replaced.
  const marker = path.join(work, "tampered-runtime-ran");
  fs.chmodSync(runtime, 0o700);
  fs.writeFileSync(runtime, `#!/bin/sh\necho ran > ${marker}\nexit 1\n`);
  const [repaired, destroyed] = runApp("nonode", resources, ["refresh", "destroy"]);
  expect(changed(ok(repaired))).toBe(0);
  expect(fs.existsSync(marker)).toBe(false);
  expect(sha256(runtime)).toBe(NODE_RUNTIMES.x64.nodeSha256);
  expect(ok(destroyed).changes?.delete).toBe(2);
  expect(nothingLocked(t.pid)).toBe(true);
});

/** Agents run with --linger from `agentDir` (the lingering agent and its guardian stub). */
function lingering(agentDir: string): number[] {
  return fs
    .readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const argv = fs.readFileSync(`/proc/${n}/cmdline`, "utf8").split("\0");
        return argv.some((a) => a.startsWith("--linger=")) && argv.some((a) => a.startsWith(agentDir + "/"));
      } catch {
        return false;
      }
    })
    .map(Number);
}

test("agent.lingerSeconds from the installed package, on a host without Node.js: the next process reaches the same agent; it leaves when its socket goes", async () => {
  const t: Target = await startTarget({});
  const agentDir = path.join(work, "host0-lingering");
  const resources = [{ name: "linger", host: 0, agentDir, lingerSeconds: 60, target: { pid: t.pid } }];
  expect(ok(runApp("linger", resources, ["up"])[0]).changes?.create).toBe(2);
  const first = lingering(agentDir);
  expect(first.length).toBeGreaterThan(0);
  const [refresh, destroyed] = runApp("linger", resources, ["refresh", "destroy"]);
  expect(changed(ok(refresh))).toBe(0);
  expect(ok(destroyed).changes?.delete).toBe(2);
  expect(nothingLocked(t.pid)).toBe(true);
  // Served by the agent the first process left: no other agent started.
  expect(lingering(agentDir).sort()).toEqual(first.sort());
  const socket = fs.readdirSync(agentDir).map((d) => path.join(agentDir, d, "agent.sock")).find((f) => fs.existsSync(f))!;
  fs.rmSync(socket);
  await waitUntil(() => lingering(agentDir).length === 0, "the lingering agent to leave once its socket is gone", { timeoutMs: 20_000 });
});

test("a local target from the installed package locks with its prebuilt addon", async () => {
  const t = await startTarget({});
  const [up, destroyed] = runApp("local", [{ name: "here", target: { pid: t.pid } }], ["up", "destroy"]);
  expect(ok(up).changes?.create).toBe(2);
  ok(destroyed);
  expect(nothingLocked(t.pid)).toBe(true);
});

test("without the package's addon folder: remote hosts work (Node.js there: no runtime uploaded), a local target fails clearly", async () => {
  fs.rmSync(path.join(app, "node_modules", "pulumi-lockmem", "prebuilds"), { recursive: true });
  execFileSync(process.execPath, ["-e", 'require("pulumi-lockmem"); require("pulumi-lockmem/provider-impl")'], { cwd: app, env });

  const remote = await startTarget({});
  const agentDir = path.join(work, "host1-agents");
  const resources = [{ name: "withnode", host: 1, agentDir, target: { pid: remote.pid } }];
  const [up, again] = runApp("withnode", resources, ["up", "up"]);
  times.firstUpWithNode = ok(up).ms;
  times.laterUpWithNode = ok(again).ms;
  expect(up.changes?.create).toBe(2);
  expect(codeLocked(remote.pid)).toBe(true);
  expect(fs.readdirSync(agentDir).filter((d) => d.startsWith("node-"))).toEqual([]);
  const [destroyed] = runApp("withnode", resources, ["destroy"]);
  expect(ok(destroyed).changes?.delete).toBe(2);
  expect(nothingLocked(remote.pid)).toBe(true);

  const local = await startTarget({});
  const [failed] = runApp("nolocal", [{ name: "here", target: { pid: local.pid } }], ["up", "destroy"]);
  expect(failed.error).toMatch(/native addon is not available on this machine \(linux-x64\)/);
  expect(failed.error).toMatch(/give the resource a `connection`/);
  expect(nothingLocked(local.pid)).toBe(true);
});
