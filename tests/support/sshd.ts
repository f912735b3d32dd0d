// Real sshd test hosts (Debian's openssh-server): one `sshd -D -e` per loopback address
// 127.0.0.2, 127.0.0.3, ..., host and user keys generated per run into a temp folder,
// stopped by pid. Needs root (sshd, useradd, sudoers) and the packages openssh-server,
// openssh-client (ssh-keygen) and sudo.
import { ChildProcess, execFileSync, spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";

export const SSHD = "/usr/sbin/sshd";
export const SSH_PORT = 2222;
/** Unprivileged user without any sudo rule. */
export const PLAIN_USER = "lockmem-test";
/** Unprivileged user that logs in with a password (set per run; only password fixtures touch it). */
export const PASSWORD_USER = "lockmem-pw";
/** Unprivileged user with a NOPASSWD sudo rule for the agent. */
export const SUDO_USER = "lockmem-sudo";

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

export interface SshHost {
  address: string;
  port: number;
  /** "ssh-ed25519 AAAA..." as `hostKey` takes it. */
  hostKey: string;
  pid: number;
  /** sshd's own log (stderr, -e), for assertions such as "the jump host forwarded". */
  log(): string;
  /** pids of the per-connection sshd processes and everything under them. */
  sessionPids(): number[];
}

export interface SshFixture {
  dir: string;
  hosts: SshHost[];
  /** Authorized for root and every test user on every host. */
  userKey: KeyPair;
  /** The same key, encrypted with `encryptedKeyPassphrase`. */
  encryptedUserKey: KeyPair;
  encryptedKeyPassphrase: string;
  /** A key that no host authorizes. */
  strangerKey: KeyPair;
  /** A host key no host has, for wrong-host-key tests. */
  strangerHostKey: string;
  /** Password of PASSWORD_USER, set only when some host has password auth (random per run). */
  password: string;
  /** A known_hosts file listing every host. */
  knownHostsPath: string;
  stop(): Promise<void>;
}

export interface SshFixtureOptions {
  hosts: number;
  /** Folder holding the `lockmem` wrapper, put first on the sessions' PATH. */
  agentBinDir: string;
  /** Absolute path of the agent wrapper, allowed for SUDO_USER in sudoers. */
  agentWrapper: string;
  /** Indexes of hosts that accept password authentication (default none). */
  passwordHosts?: number[];
  /** Indexes of hosts that log at DEBUG1 (to see forwarded connections). */
  debugHosts?: number[];
  /** First address is 127.0.0.<firstOctet> (default 2). */
  firstOctet?: number;
  /**
   * Indexes of hosts whose sessions find no `node` at all: their sshd runs in a mount
   * namespace where every node binary on the sessions' PATH is covered by an empty,
   * non-executable file (a host without Node.js, on this machine).
   */
  noNodeHosts?: number[];
  /**
   * A command that execs its arguments, put before sshd's own command line (bench:fleet
   * makes each sshd a child subreaper this way, to account for every process of a host).
   */
  launcher?: string[];
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function keygen(file: string, passphrase = ""): KeyPair {
  sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-C", path.basename(file), "-f", file]);
  return { privateKey: fs.readFileSync(file, "utf8"), publicKey: fs.readFileSync(file + ".pub", "utf8").trim() };
}

function userExists(name: string): boolean {
  try {
    sh("id", ["-u", name]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs an account tool, again while it fails: parallel test workers editing /etc/passwd or
 * /etc/shadow at once make the loser fail with "cannot lock /etc/passwd".
 */
function accountTool(cmd: string, args: string[], input?: string): void {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      execFileSync(cmd, args, { input, stdio: ["pipe", "pipe", "pipe"] });
      return;
    } catch (e) {
      if (cmd === "useradd" && userExists(args[args.length - 1])) return; // another worker made it
      if (Date.now() > deadline) throw e;
      execFileSync("sleep", ["0.1"]);
    }
  }
}

function ensureUser(name: string, password: string | undefined): void {
  if (!userExists(name)) {
    try {
      accountTool("useradd", ["--create-home", "--shell", "/bin/sh", name]);
    } catch (e) {
      if (!userExists(name)) throw e;
    }
  }
  // With UsePAM no, sshd refuses every login of an account whose password is locked ("!");
  // "*" (no password, not locked) is enough for key logins.
  if (password !== undefined) accountTool("chpasswd", [], `${name}:${password}\n`);
  else if (/^!/.test(sh("getent", ["shadow", name]).split(":")[1] ?? "")) accountTool("usermod", ["-p", "*", name]);
}

async function waitFor<T>(what: string, ms: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Children of pid, recursively (from /proc/PID/task/TID/children). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    let children = "";
    try {
      children = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8");
    } catch {
      continue;
    }
    for (const c of children.trim().split(/\s+/).filter(Boolean).map(Number)) out.push(c, ...descendants(c));
  }
  return out;
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Shell commands that cover every node binary on the sessions' PATH with an empty file. */
function hideNode(hostDir: string, agentBinDir: string): string {
  const empty = path.join(hostDir, "no-node");
  fs.writeFileSync(empty, "", { mode: 0o644 });
  const found = new Set<string>();
  for (const dir of [agentBinDir, "/usr/local/bin", "/usr/bin", "/bin"]) {
    for (const name of ["node", "nodejs"]) {
      try {
        found.add(fs.realpathSync(path.join(dir, name)));
      } catch {
        // not there
      }
    }
  }
  return [...found].map((f) => `mount --bind ${empty} ${f}`).concat("true").join(" && ");
}

export async function startSshFixture(opts: SshFixtureOptions): Promise<SshFixture> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-sshd-"));
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });

  const password = crypto.randomBytes(12).toString("base64url");
  ensureUser(PLAIN_USER, undefined);
  ensureUser(SUDO_USER, undefined);
  if ((opts.passwordHosts ?? []).length > 0) ensureUser(PASSWORD_USER, password);
  // Per fixture (no "." in the name: sudo skips such files), so parallel fixtures never meet.
  const sudoers = `/etc/sudoers.d/lockmem-test-${process.pid}-${crypto.randomBytes(4).toString("hex")}`;
  fs.writeFileSync(sudoers, `${SUDO_USER} ALL=(root) NOPASSWD: ${opts.agentWrapper}\n`, { mode: 0o440 });
  sh("visudo", ["-c", "-q", "-f", sudoers]);

  const keys = path.join(dir, "keys");
  fs.mkdirSync(keys);
  const userKey = keygen(path.join(keys, "user"));
  const encryptedKeyPassphrase = crypto.randomBytes(9).toString("base64url");
  const encryptedUserKey = keygen(path.join(keys, "user-encrypted"), encryptedKeyPassphrase);
  const strangerKey = keygen(path.join(keys, "stranger"));
  const strangerHostKey = keygen(path.join(keys, "stranger-host")).publicKey;

  const authDir = path.join(dir, "authorized_keys");
  fs.mkdirSync(authDir, { mode: 0o755 });
  for (const user of ["root", PLAIN_USER, SUDO_USER, PASSWORD_USER]) {
    fs.writeFileSync(path.join(authDir, user), `${userKey.publicKey}\n${encryptedUserKey.publicKey}\n`, { mode: 0o644 });
  }

  const children: ChildProcess[] = [];
  const hosts: SshHost[] = [];
  const knownHosts: string[] = [];
  const first = opts.firstOctet ?? 2;
  try {
    for (let i = 0; i < opts.hosts; i++) {
      const address = `127.0.0.${first + i}`;
      const hostDir = path.join(dir, `host-${i}`);
      fs.mkdirSync(hostDir, { mode: 0o755 });
      const hostKeyFile = path.join(hostDir, "ssh_host_ed25519_key");
      const hostKey = keygen(hostKeyFile).publicKey.split(" ").slice(0, 2).join(" ");
      const config = [
        `ListenAddress ${address}:${SSH_PORT}`,
        `HostKey ${hostKeyFile}`,
        `PidFile ${path.join(hostDir, "sshd.pid")}`,
        `AuthorizedKeysFile ${authDir}/%u`,
        "StrictModes no",
        "PermitRootLogin yes",
        "PubkeyAuthentication yes",
        `PasswordAuthentication ${opts.passwordHosts?.includes(i) ? "yes" : "no"}`,
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "AllowTcpForwarding yes",
        "MaxSessions 64",
        // SFTP for the provider's agent deployment (agent.install: "auto").
        "Subsystem sftp internal-sftp",
        "MaxStartups 200:30:400",
        "PrintMotd no",
        `SetEnv PATH=${opts.agentBinDir}:/usr/local/bin:/usr/bin:/bin`,
        `LogLevel ${opts.debugHosts?.includes(i) ? "DEBUG1" : "INFO"}`,
        "",
      ].join("\n");
      const configFile = path.join(hostDir, "sshd_config");
      fs.writeFileSync(configFile, config);
      sh(SSHD, ["-t", "-f", configFile]);
      const sshdArgs = [...(opts.launcher ?? []), SSHD, "-D", "-e", "-f", configFile];
      const child = opts.noNodeHosts?.includes(i)
        ? spawn("unshare", ["--mount", "--propagation", "private", "--", "sh", "-c", `${hideNode(hostDir, opts.agentBinDir)} && exec "$@"`, "sh", ...sshdArgs], { stdio: ["ignore", "ignore", "pipe"] })
        : spawn(sshdArgs[0], sshdArgs.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
      children.push(child);
      let log = "";
      child.stderr?.on("data", (d: Buffer) => {
        if (log.length < 4 * 1024 * 1024) log += d.toString();
      });
      await waitFor(`sshd on ${address}:${SSH_PORT}`, 10_000, async () => {
        if (child.exitCode !== null) throw new Error(`sshd on ${address} exited ${child.exitCode}: ${log}`);
        return (await canConnect(address, SSH_PORT)) ? true : undefined;
      });
      const pid = child.pid!;
      hosts.push({ address, port: SSH_PORT, hostKey, pid, log: () => log, sessionPids: () => descendants(pid) });
      knownHosts.push(`[${address}]:${SSH_PORT} ${hostKey}`);
    }
  } catch (e) {
    for (const c of children) if (c.pid) killQuietly(c.pid, "SIGKILL");
    throw e;
  }
  const knownHostsPath = path.join(dir, "known_hosts");
  fs.writeFileSync(knownHostsPath, knownHosts.join("\n") + "\n");

  const stop = async (): Promise<void> => {
    for (const c of children) {
      if (!c.pid || c.exitCode !== null) continue;
      for (const d of descendants(c.pid)) killQuietly(d, "SIGKILL");
      killQuietly(c.pid, "SIGTERM");
    }
    await waitFor("sshd processes to exit", 10_000, () => (children.every((c) => c.exitCode !== null || c.signalCode !== null) ? true : undefined));
    fs.rmSync(sudoers, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { dir, hosts, userKey, encryptedUserKey, encryptedKeyPassphrase, strangerKey, strangerHostKey, password, knownHostsPath, stop };
}
