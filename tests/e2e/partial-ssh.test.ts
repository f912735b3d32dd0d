// A partial lock over SSH (target.match "all", one process fails): the engine records the
// outputs of a partial create, and those carry the connection; the state file must hold it
// only encrypted, exactly as for a create that succeeds.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LockedProcessMemory } from "../../provider";
import { withStack } from "../support/stack";
import { SshFixture, startSshFixture } from "../support/sshd";
import { startTarget, stopAllTargets } from "../support/target";
import { codeLocked, ensureBuilt, nothingLocked, stackWorkDir } from "./lockmem-helpers";

jest.setTimeout(600_000);

const work = stackWorkDir();
let fx: SshFixture;
let scratch: string;

beforeAll(async () => {
  ensureBuilt();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-e2e-partial-ssh-"));
  fs.mkdirSync(path.join(scratch, "bin"));
  fx = await startSshFixture({ hosts: 1, firstOctet: 190, agentBinDir: path.join(scratch, "bin"), agentWrapper: "/nonexistent/lockmem" });
});

afterAll(async () => {
  await fx?.stop();
  await stopAllTargets();
  work.remove();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

test("a partial lock over SSH: what locked is recorded, the connection stays secret in the state", async () => {
  const tag = `lmpartialssh-${Math.random().toString(36).slice(2, 10)}`;
  const good = await startTarget({ tag, anonMb: 4 });
  // Without CAP_IPC_LOCK and with a 64 KiB RLIMIT_MEMLOCK its lock fails, before anything is done to it.
  const limited = await startTarget({ tag, dropCapIpcLock: { memlockKb: 64 } });
  const h = fx.hosts[0];
  const program = async () => {
    new LockedProcessMemory("all", {
      connection: { host: h.address, port: h.port, user: "root", privateKey: fx.userKey.privateKey, hostKey: h.hostKey },
      agent: { dir: path.join(scratch, "agents") },
      target: { cmdline: tag, match: "all" },
    });
    return {};
  };
  await withStack(program, async (s) => {
    const error = await s.up().then(
      () => "",
      (e: Error) => e.message,
    );
    expect(error).toMatch(new RegExp(`process ${limited.pid}: .*RLIMIT_MEMLOCK`));
    expect(codeLocked(good.pid)).toBe(true);
    expect(nothingLocked(limited.pid)).toBe(true);

    const state = await s.exportState();
    const r = (state.deployment.resources ?? []).find((x: { urn: string }) => x.urn.endsWith("LockedProcessMemory:Resource::all"));
    expect((r?.outputs?.processes ?? []).map((p: { pid: number }) => p.pid)).toEqual([good.pid]);
    expect(r?.initErrors?.join(" ")).toContain(`process ${limited.pid}`);
    // Encrypted in outputs and inputs both, never the key in plaintext anywhere.
    expect(r?.outputs?.connection?.["4dabf18193072939515e22adb298388d"]).toBe("1b47061264138c4ac30d75fd1eb44270");
    const text = s.stateFileText();
    for (const line of fx.userKey.privateKey.split("\n").filter((l) => l && !l.startsWith("-----"))) expect(text).not.toContain(line);
    expect(text).not.toContain("PRIVATE KEY");

    await s.destroy();
    expect(nothingLocked(good.pid)).toBe(true);
    expect(nothingLocked(limited.pid)).toBe(true);
  }, { workDir: work.workDir });
});
