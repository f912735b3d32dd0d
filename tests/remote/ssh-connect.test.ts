// The SSH transport against real sshd: host keys, user keys, passwords, sudo, a jump
// host and deadlines. Every refusal must say which check failed and why, leak no secret,
// and leave the target untouched.
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { AgentReply } from "../../src/agent/protocol";
import { SshConnection, closeAll, pooledConnectionCount, sshTransport } from "../../provider/transport/ssh";
import { TransportError } from "../../provider/transport/types";
import { MAX_AGENT_OUTPUT } from "../../provider/transport/agent-output";
import { checkInputs } from "../../provider/impl/check";
import { fingerprint, parseKeyLine } from "../../provider/transport/ssh/known-hosts";
import { AgentBundle, buildAgentBundle } from "../support/agent-bundle";
import { PASSWORD_USER, PLAIN_USER, SUDO_USER, SshFixture, startSshFixture } from "../support/sshd";
import { Target, startTarget, stopAllTargets } from "../support/target";

jest.setTimeout(120_000);

let bundle: AgentBundle;
let fx: SshFixture;
let target: Target;

function vmLck(pid: number): string {
  return /VmLck:\s*(.*)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? "?";
}

function conn(host: number, extra: Partial<SshConnection> = {}): SshConnection {
  return { host: fx.hosts[host].address, port: fx.hosts[host].port, user: "root", privateKey: fx.userKey.privateKey, hostKey: fx.hosts[host].hostKey, ...extra };
}

async function failure(p: Promise<unknown>): Promise<TransportError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TransportError) {
      // Nothing secret may appear in what an operator or a log sees.
      const shown = JSON.stringify(e.toJSON()) + e.stack;
      for (const secret of [fx.userKey.privateKey, fx.encryptedKeyPassphrase, fx.password, fx.strangerKey.privateKey]) {
        expect(shown).not.toContain(secret);
      }
      for (const line of fx.userKey.privateKey.split("\n").filter((l) => l.length > 20 && !l.startsWith("-----"))) {
        expect(shown).not.toContain(line);
      }
      return e;
    }
    throw e;
  }
  throw new Error("expected a TransportError, the call succeeded");
}

const lockReq = (pid: number) => ({ v: 1, op: "lock" as const, args: { target: { pid } } });

beforeAll(async () => {
  bundle = await buildAgentBundle();
  fx = await startSshFixture({ hosts: 3, firstOctet: 2, agentBinDir: bundle.binDir, agentWrapper: bundle.wrapper, passwordHosts: [2], debugHosts: [0] });
  target = await startTarget({ anonMb: 2 });
});

afterAll(async () => {
  await closeAll();
  await fx?.stop();
  await stopAllTargets();
  bundle?.remove();
});

afterEach(async () => {
  expect(vmLck(target.pid)).toBe("0 kB");
  expect(target.isAlive()).toBe(true);
});

test("version handshake as root with a key and a pinned host key", async () => {
  const reply = await sshTransport(conn(0)).run({ v: 1, op: "version" });
  expect(reply).toMatchObject({ ok: true, result: { protocol: 1, uid: 0 } });
});

test("a wrong host key is refused, naming the key seen and the one expected", async () => {
  const e = await failure(sshTransport(conn(0, { hostKey: fx.strangerHostKey })).run(lockReq(target.pid)));
  expect(e.code).toBe("EHOSTKEY");
  const seen = fingerprint(parseKeyLine(fx.hosts[0].hostKey)!.blob);
  const expected = fingerprint(parseKeyLine(fx.strangerHostKey)!.blob);
  expect(e.message).toContain(`presented ssh-ed25519 ${seen}`);
  expect(e.message).toContain(`expected ssh-ed25519 ${expected}`);
  expect(e.message).toContain(`${fx.hosts[0].address}:${fx.hosts[0].port}`);
});

test("no host key known: refused before connecting unless insecureIgnoreHostKey", async () => {
  const empty = path.join(fx.dir, "empty_known_hosts");
  fs.writeFileSync(empty, "");
  const e = await failure(sshTransport(conn(0, { hostKey: undefined, knownHostsPath: empty })).run(lockReq(target.pid)));
  expect(e.code).toBe("EHOSTKEY");
  expect(e.message).toContain("no host key is known");
  expect(e.hint).toContain("insecureIgnoreHostKey");
  const ok = await sshTransport(conn(0, { hostKey: undefined, knownHostsPath: empty, insecureIgnoreHostKey: true })).run({ v: 1, op: "version" });
  expect(ok.ok).toBe(true);
});

test("a known_hosts file is honoured, and a mismatching entry is refused", async () => {
  const ok = await sshTransport(conn(1, { hostKey: undefined, knownHostsPath: fx.knownHostsPath })).run({ v: 1, op: "version" });
  expect(ok.ok).toBe(true);
  const wrong = path.join(fx.dir, "wrong_known_hosts");
  fs.writeFileSync(wrong, `[${fx.hosts[1].address}]:${fx.hosts[1].port} ${fx.strangerHostKey}\n`);
  const e = await failure(sshTransport(conn(1, { hostKey: undefined, knownHostsPath: wrong })).run(lockReq(target.pid)));
  expect(e.code).toBe("EHOSTKEY");
  expect(e.message).toContain(`from ${wrong}`);
});

test("a key the host does not authorize: refused, naming the user", async () => {
  const e = await failure(sshTransport(conn(0, { privateKey: fx.strangerKey.privateKey })).run(lockReq(target.pid)));
  expect(e.code).toBe("EAUTH");
  expect(e.message).toContain('authentication failed for user "root"');
  expect(e.message).toContain("publickey");
});

test("an encrypted key works with its passphrase and is explained without it", async () => {
  const ok = await sshTransport(conn(0, { privateKey: fx.encryptedUserKey.privateKey, privateKeyPassword: fx.encryptedKeyPassphrase })).run({ v: 1, op: "version" });
  expect(ok.ok).toBe(true);
  const e = await failure(sshTransport(conn(0, { privateKey: fx.encryptedUserKey.privateKey })).run(lockReq(target.pid)));
  expect(e.code).toBe("EUSAGE");
  expect(e.hint).toContain("privateKeyPassword");
  const bad = await failure(sshTransport(conn(0, { privateKey: fx.encryptedUserKey.privateKey, privateKeyPassword: "wrong" })).run(lockReq(target.pid)));
  expect(bad.code).toBe("EUSAGE");
});

test("password authentication where the host allows it, a clear refusal where it does not", async () => {
  const ok = await sshTransport(conn(2, { user: PASSWORD_USER, privateKey: undefined, password: fx.password })).run({ v: 1, op: "version" });
  expect(ok).toMatchObject({ ok: true, result: { protocol: 1 } });
  expect((ok as Extract<AgentReply, { ok: true }>).result).not.toMatchObject({ uid: 0 });
  const e = await failure(sshTransport(conn(0, { user: PASSWORD_USER, privateKey: undefined, password: fx.password })).run(lockReq(target.pid)));
  expect(e.code).toBe("EAUTH");
  expect(e.message).toContain(`user "${PASSWORD_USER}"`);
  expect(e.message).toContain("password");
});

test("a non-root user without sudo: the agent refuses with EPERM and says it is not root", async () => {
  const reply = await sshTransport(conn(0, { user: PLAIN_USER })).run(lockReq(target.pid));
  expect(reply.ok).toBe(false);
  if (reply.ok) return;
  expect(reply.error.code).toBe("EPERM");
  expect(reply.error.hint).toContain(`runs as user "${PLAIN_USER}"`);
  expect(reply.error.hint).toContain("sudo");
});

test("sudo without a NOPASSWD rule: ESUDO says a password would be needed", async () => {
  const e = await failure(sshTransport(conn(0, { user: PLAIN_USER, sudo: true, agentPath: bundle.wrapper })).run(lockReq(target.pid)));
  expect(e.code).toBe("ESUDO");
  expect(e.message).toContain("sudo needs a password");
});

test("sudo for a non-root user with a NOPASSWD rule locks and unlocks", async () => {
  const t = sshTransport(conn(1, { user: SUDO_USER, sudo: true, agentPath: bundle.wrapper }));
  expect(await t.run({ v: 1, op: "version" })).toMatchObject({ ok: true, result: { uid: 0 } });
  const locked = await t.run(lockReq(target.pid));
  expect(locked).toMatchObject({ ok: true });
  expect(vmLck(target.pid)).not.toBe("0 kB");
  const unlocked = await t.run({ v: 1, op: "unlock", args: { target: { pid: target.pid } } });
  expect(unlocked).toMatchObject({ ok: true });
});

test("agentPath is checked against a safe charset, and a missing agent is named", async () => {
  expect(() => sshTransport(conn(0, { agentPath: "lockmem; rm -rf /" }))).toThrow(/agentPath/);
  expect(() => sshTransport(conn(0, { agentPath: "--help" }))).toThrow(/agentPath/);
  const e = await failure(sshTransport(conn(0, { agentPath: "/nonexistent/lockmem" })).run(lockReq(target.pid)));
  expect(e.code).toBe("ENOAGENT");
  expect(e.message).toContain("/nonexistent/lockmem agent");
});

test("through a jump host (proxy): the jump host forwards, the agent runs on the target host", async () => {
  const before = pooledConnectionCount();
  const t = sshTransport(conn(1, { proxy: { host: fx.hosts[0].address, port: fx.hosts[0].port, user: "root", privateKey: fx.userKey.privateKey, hostKey: fx.hosts[0].hostKey } }));
  expect(t.where).toContain(`via ${fx.hosts[0].address}`);
  const reply = await t.run({ v: 1, op: "status", args: { target: { pid: target.pid } } });
  expect(reply).toMatchObject({ ok: true });
  expect(fx.hosts[0].log()).toContain(`target ${fx.hosts[1].address} port ${fx.hosts[1].port}`);
  expect(pooledConnectionCount()).toBeGreaterThan(before);
  // A wrong host key of the host behind the jump host is still caught.
  const e = await failure(
    sshTransport(conn(1, { hostKey: fx.strangerHostKey, proxy: { host: fx.hosts[0].address, port: fx.hosts[0].port, privateKey: fx.userKey.privateKey, hostKey: fx.hosts[0].hostKey } })).run(lockReq(target.pid)),
  );
  expect(e.code).toBe("EHOSTKEY");
});

test("insecureIgnoreHostKey is per hop: the jump host never inherits the target host's", async () => {
  const empty = path.join(fx.dir, "empty_known_hosts_hops");
  fs.writeFileSync(empty, "");
  const jump = { host: fx.hosts[0].address, port: fx.hosts[0].port, user: "root", privateKey: fx.userKey.privateKey };
  // Seen before: the connection's flag also covered the jump host, where a man in the middle
  // would then have received the credentials of the jump hop.
  const e = await failure(sshTransport(conn(1, { hostKey: undefined, knownHostsPath: empty, insecureIgnoreHostKey: true, proxy: jump })).run({ v: 1, op: "version" }));
  expect(e.code).toBe("EHOSTKEY");
  expect(e.where).toContain(fx.hosts[0].address);
  expect(e.message).toContain(`no host key is known for ${fx.hosts[0].address} port ${fx.hosts[0].port}`);
  expect(e.hint).toContain("connection.proxy.hostKey");
  expect(e.hint).toContain("connection.insecureIgnoreHostKey covers the target host only");
  // Given for the jump hop itself, it applies there (and only there: the target host keeps its pinned key).
  const ok = await sshTransport(conn(1, { knownHostsPath: empty, proxy: { ...jump, insecureIgnoreHostKey: true } })).run({ v: 1, op: "version" });
  expect(ok.ok).toBe(true);
  const wrongTarget = await failure(
    sshTransport(conn(1, { hostKey: fx.strangerHostKey, knownHostsPath: empty, proxy: { ...jump, insecureIgnoreHostKey: true } })).run({ v: 1, op: "version" }),
  );
  expect(wrongTarget.code).toBe("EHOSTKEY");
});

test("insecureIgnoreHostKey is refused for a hop that authenticates with a password, before dialing", () => {
  const pw = { user: PASSWORD_USER, privateKey: undefined, password: fx.password, hostKey: undefined, insecureIgnoreHostKey: true };
  const names = (fn: () => unknown): string => {
    try {
      fn();
    } catch (err) {
      if (!(err instanceof TransportError)) throw err;
      expect(JSON.stringify(err.toJSON())).not.toContain(fx.password);
      expect(err.code).toBe("EUSAGE");
      return `${err.message} ${err.hint}`;
    }
    throw new Error("accepted");
  };
  expect(names(() => sshTransport(conn(2, pw)))).toMatch(/connection\.insecureIgnoreHostKey cannot be used with password authentication.*connection\.hostKey/);
  const jump = { host: fx.hosts[2].address, port: fx.hosts[2].port, user: PASSWORD_USER, password: fx.password, insecureIgnoreHostKey: true };
  expect(names(() => sshTransport(conn(1, { proxy: jump })))).toMatch(/connection\.proxy\.insecureIgnoreHostKey cannot be used with password authentication/);
  // The provider's check says the same, per property, before anything reaches a host.
  const failures = checkInputs({ target: { pid: target.pid }, connection: { ...conn(2), ...pw } });
  expect(failures).toEqual([{ property: "connection", reason: expect.stringMatching(/connection\.insecureIgnoreHostKey cannot be used with password authentication/) }]);
  expect(JSON.stringify(failures)).not.toContain(fx.password);
  const proxied = checkInputs({ target: { pid: target.pid }, connection: { ...conn(1), proxy: jump } });
  expect(proxied[0]?.reason).toMatch(/connection\.proxy\.insecureIgnoreHostKey cannot be used with password authentication/);
});

test("serve mode: a reply line longer than 16 MiB ends the session with EAGENT instead of filling memory", async () => {
  // A stand-in for a broken or hostile agent: one endless line, then it waits for its input to end.
  const flood = path.join(fx.dir, "flood-agent.sh");
  fs.writeFileSync(flood, `#!/bin/sh\nhead -c ${MAX_AGENT_OUTPUT + 1024 * 1024} /dev/zero | tr '\\0' x\nexec cat >/dev/null\n`, { mode: 0o755 });
  const version = { protocol: 1, agent: "0.0.0", node: "v0", arch: "x64", uid: 0 };
  const t = sshTransport(conn(0), { agentCommand: flood, agentVersion: version, persistent: true });
  const started = Date.now();
  const e = await failure(t.run({ v: 1, op: "status", args: { target: { pid: target.pid } } }, { timeoutMs: 30_000 }));
  expect(e.code).toBe("EAGENT");
  expect(e.message).toContain(`the agent sent a reply line longer than ${MAX_AGENT_OUTPUT} bytes; the session was closed`);
  expect(Date.now() - started).toBeLessThan(30_000);
});

test("connections are reused: many operations, one connection per host", async () => {
  await closeAll();
  const t = sshTransport(conn(2));
  for (let i = 0; i < 5; i++) expect((await t.run({ v: 1, op: "status", args: { target: { pid: target.pid } } })).ok).toBe(true);
  await Promise.all([1, 2, 3].map(() => sshTransport(conn(2)).run({ v: 1, op: "version" })));
  expect(pooledConnectionCount()).toBe(1);
  const sessions = fx.hosts[2].sessionPids().length;
  expect(sessions).toBeGreaterThan(0);
  expect(sessions).toBeLessThanOrEqual(2); // sshd's monitor and session process for one connection
});

test("nothing listening: fails after dialErrorLimit attempts, quickly", async () => {
  const started = Date.now();
  // A port that was free a moment ago on an address nobody else uses.
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once("error", reject);
    probe.listen(0, "127.0.0.250", resolve);
  });
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const e = await failure(sshTransport({ ...conn(0), host: "127.0.0.250", port, dialErrorLimit: 3 }).run(lockReq(target.pid), { timeoutMs: 10_000 }));
  expect(e.code).toBe("ECONNECT");
  expect(e.message).toContain("ECONNREFUSED");
  expect(e.message).toContain("3 dial attempt(s)");
  expect(Date.now() - started).toBeLessThan(5_000);
});

test("a host that accepts TCP but never speaks SSH fails within the deadline", async () => {
  const silent = net.createServer(() => undefined);
  await new Promise<void>((resolve, reject) => {
    silent.once("error", reject);
    silent.listen(0, "127.0.0.251", resolve);
  });
  const port = (silent.address() as net.AddressInfo).port;
  const sockets: net.Socket[] = [];
  silent.on("connection", (s) => sockets.push(s));
  try {
    let started = Date.now();
    const perDial = await failure(sshTransport({ ...conn(0), host: "127.0.0.251", port, perDialTimeout: 1, dialErrorLimit: 2 }).run(lockReq(target.pid), { timeoutMs: 30_000 }));
    expect(perDial.code).toBe("ECONNECT");
    expect(perDial.message).toContain("no SSH handshake");
    expect(Date.now() - started).toBeLessThan(4_000);

    started = Date.now();
    const deadline = await failure(sshTransport({ ...conn(0), host: "127.0.0.251", port, dialErrorLimit: -1 }).run(lockReq(target.pid), { timeoutMs: 1_500 }));
    expect(deadline.code).toBe("ETIMEDOUT");
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(1_400);
    expect(took).toBeLessThan(2_500);
  } finally {
    sockets.forEach((s) => s.destroy());
    await new Promise((r) => silent.close(r));
  }
});
