// Guests with real Debian kernels for tests (issue 19): built by scripts/guest/build.sh
// (cached outside the repo), booted with qemu under TCG, reached over SSH on a forwarded
// 127.0.0.1 port, stopped by the pid of the qemu this process started.
//
// Why TCG and these flags (seen on this machine, see issue 19):
// - /dev/kvm here is an emulated KVM whose guests die on cmpxchg16b, xrstor and int3: never
//   use it; `-accel tcg,thread=multi` runs one host thread per guest CPU.
// - `-kernel` gets the uncompressed kernel: a bzImage decompresses itself very slowly
//   under emulation; the initramfs is an uncompressed cpio for the same reason.
// - arm64: `-cpu max,pauth-impdef=on`: the architected pointer-authentication algorithm
//   (QARMA) is emulated slowly and makes Node 3x slower.
// - `-nic user,restrict=on`: user-mode networking, nothing from the guest leaves qemu; only
//   the forwarded SSH port comes in.
// Readiness is an `SSH-` banner on the port: qemu's forwarder accepts connections long
// before the guest's sshd runs.
import { ChildProcess, execFile, spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { Client } from "ssh2";
import { exec, RemoteResult } from "../../provider/agent/host-probe";
import { SshConnection, withSshClient } from "../../provider/transport/ssh";
import { repoRoot } from "./repo";

export type GuestSuite = "bullseye" | "bookworm" | "trixie";
export type GuestArch = "amd64" | "arm64";

/** A built guest: what scripts/guest/build.sh left in its cache folder. */
export interface GuestImage {
  name: string;
  suite: GuestSuite;
  arch: GuestArch;
  dir: string;
  /** `uname -r` of its kernel, e.g. "6.1.0-50-amd64". */
  kernelRelease: string;
  /** Seconds the build took; `cached` when this call found it built. */
  buildSeconds: number;
  cached: boolean;
  /** Wall time of this call (the cache check when cached). */
  elapsedMs: number;
}

/**
 * Builds (or finds cached) the guest for a suite and architecture. The first build
 * downloads ~100 MB of packages and takes a minute or two; a cached one takes about a
 * second (it hashes the host binaries it would copy in).
 */
export function buildGuest(suite: GuestSuite, arch: GuestArch, timeoutMs = 15 * 60_000): Promise<GuestImage> {
  const started = Date.now();
  const script = path.join(repoRoot(), "scripts", "guest", "build.sh");
  return new Promise((resolve, reject) => {
    execFile("bash", [script, suite, arch], { encoding: "utf8", timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`building the ${suite}/${arch} guest failed (bash ${script} ${suite} ${arch}): ${err.message}\n${stderr.slice(-4000)}`));
      const dir = stdout.trim().split("\n").pop() ?? "";
      const info = readInfo(dir);
      resolve({
        name: `${suite}-${arch}`,
        suite,
        arch,
        dir,
        kernelRelease: info.kernel,
        buildSeconds: Number(info.build_seconds),
        cached: /: cached \(/.test(stderr),
        elapsedMs: Date.now() - started,
      });
    });
  });
}

function readInfo(dir: string): Record<string, string> {
  const text = fs.readFileSync(path.join(dir, "info"), "utf8");
  return Object.fromEntries(text.split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

/** A running guest. Its connection fields are those of the provider's `connection`. */
export interface Guest {
  image: GuestImage;
  host: string;
  port: number;
  user: string;
  privateKey: string;
  /** "ssh-ed25519 AAAA...": the guest's pre-made host key, verified on every connection. */
  hostKey: string;
  /** pid of the qemu process. */
  pid: number;
  /** From qemu's start to the sshd banner. */
  bootMs: number;
  /** The provider's connection for this guest (host key required). */
  connection(): SshConnection;
  /** Runs a shell command in the guest as root (one SSH channel). */
  run(command: string, timeoutMs?: number): Promise<RemoteResult>;
  /** Like run, but throws with stderr unless it exits 0; returns stdout. */
  check(command: string, timeoutMs?: number): Promise<string>;
  /** Copies a host file into the guest over SFTP. */
  upload(local: string, remote: string, mode?: number): Promise<void>;
  /** The serial console so far (kernel messages, /init's output). */
  console(): string;
  /** Stops qemu (SIGTERM, then SIGKILL), by pid. */
  stop(): Promise<void>;
}

export interface BootOptions {
  memoryMb?: number;
  cpus?: number;
  /** Until the sshd banner; default LOCKMEM_GUEST_BOOT_MS or 180 s (45-100 s were seen at load 30-40). */
  deadlineMs?: number;
}

const running = new Set<Guest>();
/** Every qemu this process started and has not seen exit: killed when the process exits. */
const qemus = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  qemus.add(child);
  child.once("exit", () => qemus.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test run that ends without stopping its guests (a hook timed out, a crash) must not
  // leave qemu running: it would hold two cores until someone notices. By pid, ours only.
  process.on("exit", () => {
    for (const c of qemus) {
      try {
        if (c.pid) process.kill(c.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Whether the port answers with an SSH banner within a few seconds. */
function sshBanner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    let got = "";
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 3_000);
    s.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      if (got.length >= 4) done(got.startsWith("SSH-"));
    });
    s.once("error", () => done(false));
    s.once("close", () => done(false));
  });
}

function qemuArgs(image: GuestImage, port: number, consoleLog: string, opts: BootOptions): { bin: string; args: string[] } {
  const common = [
    "-m", String(opts.memoryMb ?? 1024), "-smp", String(opts.cpus ?? 2),
    "-nodefaults", "-display", "none", "-no-reboot", "-serial", `file:${consoleLog}`,
    "-kernel", path.join(image.dir, "kernel"), "-initrd", path.join(image.dir, "initramfs.cpio"),
    "-nic", `user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:${port}-:22`,
    // Entropy for sshd's getrandom on kernels that would otherwise wait for it.
    "-device", "virtio-rng-pci",
  ];
  if (image.arch === "amd64") {
    return { bin: "qemu-system-x86_64", args: ["-accel", "tcg,thread=multi", "-cpu", "max", ...common, "-append", "console=ttyS0 panic=-1 quiet"] };
  }
  return { bin: "qemu-system-aarch64", args: ["-M", "virt", "-accel", "tcg,thread=multi", "-cpu", "max,pauth-impdef=on", ...common, "-append", "console=ttyAMA0 panic=-1 quiet"] };
}

function exitedOf(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Boots the guest and resolves once its sshd answers. */
export async function bootGuest(image: GuestImage, opts: BootOptions = {}): Promise<Guest> {
  const deadlineMs = opts.deadlineMs ?? Number(process.env.LOCKMEM_GUEST_BOOT_MS ?? 180_000);
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), `lockmem-guest-${image.name}-`));
  const consoleLog = path.join(scratch, "console.log");
  const privateKey = fs.readFileSync(path.join(image.dir, "id_ed25519"), "utf8");
  const hostKey = fs.readFileSync(path.join(image.dir, "host_key.pub"), "utf8").trim();
  const readConsole = (): string => {
    try {
      return fs.readFileSync(consoleLog, "utf8");
    } catch {
      return "";
    }
  };
  // The free port may be taken between the probe and qemu's bind: qemu then exits at once
  // ("could not set up host forwarding rule"), and another port is tried.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const { bin, args } = qemuArgs(image, port, consoleLog, opts);
    const started = Date.now();
    const child = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"] });
    track(child);
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      if (stderr.length < 64 * 1024) stderr += d.toString();
    });
    const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));
    let failure: Error | undefined;
    for (;;) {
      const early = await Promise.race([spawnError, Promise.resolve(undefined)]);
      if (early) {
        failure = new Error(`cannot start ${bin} (Debian package ${image.arch === "amd64" ? "qemu-system-x86" : "qemu-system-arm"}): ${early.message}`);
        break;
      }
      if (exitedOf(child)) {
        failure = new Error(`${bin} for the ${image.name} guest exited (${child.exitCode ?? child.signalCode}) before sshd answered: ${stderr.trim()}\nconsole:\n${readConsole().slice(-3000)}`);
        break;
      }
      if (await sshBanner(port)) break;
      if (Date.now() - started > deadlineMs) {
        child.kill("SIGKILL");
        failure = new Error(`the ${image.name} guest's sshd did not answer on 127.0.0.1:${port} within ${deadlineMs} ms (LOCKMEM_GUEST_BOOT_MS raises it)\nconsole:\n${readConsole().slice(-3000)}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    if (failure) {
      if (attempt < 3 && /host forwarding/i.test(stderr)) continue;
      // A guest kernel that crashed while booting (seen once in CI: trixie's 6.12 oopsed on
      // an int3 in sched_clock_cpu while static keys were patched, a cross-vCPU code-patching
      // race of multi-threaded TCG) says nothing about lockmem, and panic=-1 -no-reboot
      // ends qemu: boot it again, and say so.
      const crashed = /\b(Oops|Kernel panic|BUG):/.test(readConsole());
      if (attempt < 3 && crashed && exitedOf(child)) {
        process.stderr.write(`guest ${image.name}: the kernel crashed while booting (attempt ${attempt}); booting again\n${readConsole().slice(-1500)}\n`);
        continue;
      }
      fs.rmSync(scratch, { recursive: true, force: true });
      throw failure;
    }
    const guest = makeGuest(image, child, port, Date.now() - started, privateKey, hostKey, readConsole, scratch);
    running.add(guest);
    return guest;
  }
}

function makeGuest(image: GuestImage, child: ChildProcess, port: number, bootMs: number, privateKey: string, hostKey: string, readConsole: () => string, scratch: string): Guest {
  const connection = (): SshConnection => ({ host: "127.0.0.1", port, user: "root", privateKey, hostKey });
  const run = (command: string, timeoutMs = 120_000): Promise<RemoteResult> =>
    withSshClient(connection(), timeoutMs, (client: Client, where: string) => exec(client, command, where, `running ${JSON.stringify(command)}`, timeoutMs));
  const guest: Guest = {
    image,
    host: "127.0.0.1",
    port,
    user: "root",
    privateKey,
    hostKey,
    pid: child.pid!,
    bootMs,
    connection,
    run,
    async check(command, timeoutMs) {
      const r = await run(command, timeoutMs);
      if (r.code !== 0) throw new Error(`in the ${image.name} guest, ${JSON.stringify(command)} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
      return r.stdout;
    },
    upload(local, remote, mode = 0o755) {
      return withSshClient(connection(), 120_000, (client) =>
        new Promise<void>((resolve, reject) =>
          client.sftp((err, sftp) => {
            if (err) return reject(err);
            sftp.fastPut(local, remote, { mode }, (e) => {
              sftp.end();
              if (e) reject(new Error(`uploading ${local} to the ${image.name} guest's ${remote}: ${e.message}`));
              else resolve();
            });
          }),
        ),
      );
    },
    console: readConsole,
    async stop() {
      running.delete(guest);
      if (!exitedOf(child)) {
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(scratch, { recursive: true, force: true });
    },
  };
  return guest;
}

/** Stops every guest this process booted and has not stopped yet. */
export async function stopAllGuests(): Promise<void> {
  await Promise.all([...running].map((g) => g.stop()));
}
