// `npm run bench:guest` (issue 19, "Show"): `npm run bench` (bench/core.ts) run inside a
// guest kernel booted under qemu, by default the bookworm arm64 guest, so lockmem's stall
// on aarch64 is set against the in-process floor and gdb measured in the same guest. TCG
// makes absolute times meaningless; ratios within one run still hold.
//
//   node dist/bench/guest.js [--suite bookworm] [--arch arm64] [--no-gdb]
//
// What goes into the guest (/root/lockmem, laid out like a checkout, so that the bench's
// repoRoot() and the addon loader find their files):
//   dist/{bench,src,tests}   the compiled JS, as `npm run bench` runs it (not one bundle:
//                         lockmem starts its guardian as `node dist/src/agent/main.js`)
//   node_modules/...      only the packages those import (esbuild's import graph)
//   prebuilds/linux-<arch>/node.napi.glibc.node   the shipped addon
//   tests/.work/bin/target   tests/fixtures/target.c cross-compiled statically (the guest
//                         has no compiler; a binary newer than target.c is not rebuilt)
// gdb comes from the image: scripts/guest/build-gdb.sh adds Debian's gdb to the test
// image; --no-gdb boots the plain test image and runs the bench with no gdb rows
// (BENCH_GDB_REPS=0, BENCH_SIZE_GDB_REPS=0).
// Afterwards bench/handoff.c (cross-compiled too) prints what one ptrace stop costs in the
// guest, BENCH_HANDOFF_N (2000) round trips per placement.
// BENCH_* variables set here are passed on to the bench in the guest (bench/core.ts lists
// them); LOCKMEM_GUEST_MEMORY_MB sets the guest's memory (default 2048: the initramfs with
// gdb takes ~300 MiB of RAM, the target locks 256 MiB).
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Client } from "ssh2";
import { Arch, prebuiltAddonPath } from "../src/arch";
import { closeAll, withSshClient } from "../provider/transport/ssh";
import { bootGuest, Guest, GuestArch, GuestImage, GuestSuite } from "../tests/support/guest";
import { staticBinary, staticFixture } from "../tests/support/guest-binaries";
import { repoRoot } from "../tests/support/repo";
import { envInt } from "./env";

const REMOTE = "/root/lockmem";
const NODE_ARCH: Record<GuestArch, Arch> = { amd64: "x64", arm64: "arm64" };
const SUITES: GuestSuite[] = ["bullseye", "bookworm", "trixie"];

interface Options {
  suite: GuestSuite;
  arch: GuestArch;
  gdb: boolean;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { suite: "bookworm", arch: "arm64", gdb: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new TypeError(`${a}: expected a value`);
      return v;
    };
    if (a === "--suite") {
      const s = value();
      if (!(SUITES as string[]).includes(s)) throw new TypeError(`--suite: expected one of ${SUITES.join(", ")}, got ${JSON.stringify(s)}`);
      opts.suite = s as GuestSuite;
    } else if (a === "--arch") {
      const s = value();
      if (s !== "amd64" && s !== "arm64") throw new TypeError(`--arch: expected amd64 or arm64, got ${JSON.stringify(s)}`);
      opts.arch = s;
    } else if (a === "--no-gdb") {
      opts.gdb = false;
    } else {
      throw new TypeError(`unknown argument ${JSON.stringify(a)} (expected --suite S, --arch A, --no-gdb)`);
    }
  }
  return opts;
}

/** Runs a build script of scripts/guest/ and reads the image folder it prints. */
function buildImage(script: string, opts: Options): Promise<GuestImage> {
  const started = Date.now();
  const file = path.join(repoRoot(), "scripts", "guest", script);
  return new Promise((resolve, reject) => {
    execFile("bash", [file, opts.suite, opts.arch], { encoding: "utf8", timeout: 20 * 60_000, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`building the guest failed (bash ${file} ${opts.suite} ${opts.arch}): ${err.message}\n${stderr.slice(-4000)}`));
      process.stderr.write(stderr);
      const dir = stdout.trim().split("\n").pop() ?? "";
      const info = Object.fromEntries(
        fs.readFileSync(path.join(dir, "info"), "utf8").split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
      resolve({
        name: path.basename(dir),
        suite: opts.suite,
        arch: opts.arch,
        dir,
        kernelRelease: info.kernel,
        buildSeconds: Number(info.build_seconds),
        cached: /: cached \(/.test(stderr),
        elapsedMs: Date.now() - started,
      });
    });
  });
}

/**
 * The packages of node_modules that the bench and the agent (the guardian lockmem starts is
 * `node dist/src/agent/main.js --guardian`) import, as paths under the repository root,
 * nested ones included: esbuild's view of the import graph, nothing is written.
 */
async function runtimePackages(root: string): Promise<string[]> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const esbuild = require("esbuild") as typeof import("esbuild");
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [path.join(root, "bench", "core.ts"), path.join(root, "src", "agent", "main.ts")],
    bundle: true,
    platform: "node",
    write: false,
    metafile: true,
    outdir: path.join(root, "dist", ".unused"),
    logLevel: "error",
  });
  const dirs = new Set<string>();
  for (const input of Object.keys(result.metafile.inputs)) {
    const at = input.indexOf("node_modules/");
    if (at < 0) continue;
    // node_modules/a/node_modules/@s/b/lib/x.js -> node_modules/a/node_modules/@s/b
    const rel = input.slice(at);
    const last = rel.lastIndexOf("node_modules/") + "node_modules/".length;
    const parts = rel.slice(last).split("/");
    dirs.add(rel.slice(0, last) + parts.slice(0, parts[0].startsWith("@") ? 2 : 1).join("/"));
  }
  return [...dirs].sort();
}

/**
 * What `node dist/bench/core.js` needs, as one tar laid out like the checkout: the compiled
 * bench, src and test helpers (dist/; `npm run build:ts` made them), package.json, the
 * addon, target.c (repoRoot() looks for it) and the packages they import.
 */
async function packTree(root: string, addonRel: string, tarFile: string): Promise<void> {
  for (const f of ["dist/bench/core.js", "dist/src/agent/main.js", "dist/tests/support/target.js"]) {
    if (!fs.existsSync(path.join(root, f))) throw new Error(`${f} is missing: run \`npm run build:ts\` first`);
  }
  const paths = ["package.json", "dist/bench", "dist/src", "dist/tests", addonRel, "tests/fixtures/target.c", ...(await runtimePackages(root))];
  // -h: node_modules may be a symlink (worktrees share one).
  const args = ["-cf", tarFile, "-h", "--exclude=*.map", "--exclude=*.d.ts", "-C", root, ...paths];
  await new Promise<void>((resolve, reject) =>
    execFile("tar", args, { maxBuffer: 16 * 1024 * 1024 }, (err, _out, stderr) => (err ? reject(new Error(`tar ${args.join(" ")} failed: ${stderr || err.message}`)) : resolve())),
  );
}

/** BENCH_* of this process as `K='V' ` assignments for the guest's shell (values checked by the bench itself). */
function benchEnv(gdb: boolean): string {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (/^BENCH_[A-Z_]+$/.test(k) && v !== undefined) env[k] = v;
  if (!gdb) {
    env.BENCH_GDB_REPS = "0";
    env.BENCH_SIZE_GDB_REPS = "0";
  }
  return Object.entries(env)
    .map(([k, v]) => `${k}='${v.replace(/'/g, `'\\''`)}' `)
    .join("");
}

/** Runs `command` in the guest with its output streamed here; resolves with its exit status. */
function stream(guest: Guest, command: string): Promise<number | null> {
  return withSshClient(guest.connection(), 120_000, (client: Client) =>
    new Promise<number | null>((resolve, reject) => {
      client.exec(command, (err, ch) => {
        if (err) return reject(new Error(`running ${JSON.stringify(command)} in the ${guest.image.name} guest: ${err.message}`));
        let code: number | null = null;
        ch.on("data", (d: Buffer) => process.stdout.write(d));
        ch.stderr.on("data", (d: Buffer) => process.stderr.write(d));
        ch.on("exit", (c: number | null) => (code = c));
        ch.on("close", () => resolve(code));
        ch.end();
      });
    }),
  );
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const memoryMb = envInt("LOCKMEM_GUEST_MEMORY_MB", 2048, 512);
  const root = repoRoot();
  const addon = path.join(root, prebuiltAddonPath(NODE_ARCH[opts.arch]));
  if (!fs.existsSync(addon)) throw new Error(`${addon} is missing: run \`npm run build:native\` first`);

  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-bench-guest-"));
  let guest: Guest | undefined;
  try {
    const addonRel = prebuiltAddonPath(NODE_ARCH[opts.arch]);
    const tree = path.join(scratch, "lockmem.tar");
    await packTree(root, addonRel, tree);
    const target = staticFixture("target", opts.arch);
    const handoff = staticBinary(path.join(root, "bench", "handoff.c"), opts.arch);
    const image = await buildImage(opts.gdb ? "build-gdb.sh" : "build.sh", opts);

    guest = await bootGuest(image, { memoryMb, cpus: 2 });
    console.log(`guest ${image.name}: kernel ${image.kernelRelease}, ${memoryMb} MiB, 2 CPUs (qemu pid ${guest.pid}, sshd after ${(guest.bootMs / 1000).toFixed(1)} s)`);
    await guest.check(`mkdir -p ${REMOTE}/tests/.work/bin`);
    await guest.upload(tree, "/tmp/lockmem.tar", 0o644);
    await guest.check(`tar -xf /tmp/lockmem.tar -C ${REMOTE} && rm /tmp/lockmem.tar`);
    await guest.upload(target, `${REMOTE}/tests/.work/bin/target`, 0o755);
    await guest.upload(handoff, "/tmp/handoff", 0o755);
    // targetBinary() rebuilds (with a gcc the guest lacks) unless the binary is newer than its source.
    await guest.check(`touch ${REMOTE}/tests/.work/bin/target`);
    const about = await guest.check("uname -srm; node -v; nproc; if [ -x /usr/bin/gdb ]; then gdb --version | head -n 1; else echo 'no gdb'; fi");
    console.log(about.trim().replace(/\n/g, "; "));

    const command = `cd ${REMOTE} && ${benchEnv(opts.gdb)}node dist/bench/core.js`;
    console.log(`in the guest: ${command}`);
    const code = await stream(guest, command);
    if (code !== 0) throw new Error(`the bench exited ${code} in the ${image.name} guest`);
    // What one ptrace stop costs in this guest (bench/handoff.c): every injected call takes
    // two, and under emulation they, not the kernel's work, make most of lockmem's pause.
    console.log("");
    const handoffCode = await stream(guest, `/tmp/handoff ${envInt("BENCH_HANDOFF_N", 2000)} 3`);
    if (handoffCode !== 0) throw new Error(`bench/handoff.c exited ${handoffCode} in the ${image.name} guest`);
  } finally {
    await closeAll();
    if (guest) await guest.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench in the guest failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
});
