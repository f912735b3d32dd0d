// The four things `bench:fleet` runs on the same fleet, as Pulumi programs:
// - lockmem: LockedProcessMemory, every mapping current and future;
// - command: the REAL recipe, @pulumi/command's remote.Command (the Go plugin) running
//   `gdb -p PID -batch -ex 'call (int)mlockall(3)'` on create, munlockall() on delete;
// - gdb: our emulation of that recipe (a dynamic resource that dials SSH and runs the same
//   gdb line), the fallback when the real plugin is not installed;
// - engine: the same number of dynamic resources with the recipe's inputs, doing nothing.
// mlockall(MCL_CURRENT | MCL_FUTURE) = 3 locks what `mappings: { all: true }, future: true` does.
import * as pulumi from "@pulumi/pulumi";
import { remote } from "@pulumi/command";
import { LockedProcessMemory } from "../../provider";
import { RESIDENT_LINGER } from "./config";
import { SshFixture } from "../../tests/support/sshd";
import { Target } from "../../tests/support/target";

export type Approach = "lockmem" | "resident" | "command" | "gdb" | "engine";

export interface Fleet {
  fx: SshFixture;
  /** Agent folders for the "resident" approach: one per host under it (`host-N`). */
  agentBase: string;
  targets: { host: number; target: Target }[];
}

/**
 * The recipe's command lines. DEBUGINFOD_URLS= keeps gdb from asking debuginfod servers
 * for symbols (no network here; with network it would only be slower).
 */
export const lockLine = (pid: number): string => `DEBUGINFOD_URLS= gdb -p ${pid} -batch -ex 'call (int)mlockall(3)'`;
export const unlockLine = (pid: number): string => `DEBUGINFOD_URLS= gdb -p ${pid} -batch -ex 'call (int)munlockall()'`;

interface GdbInputs {
  host: string;
  port: number;
  privateKey: string;
  hostKey: string;
  pid: number;
}

/**
 * One fresh SSH connection per call, one command, then close: what remote.Command does.
 * Serialized into the gdb resources' provider, so it uses only `require`.
 */
async function runOverNewConnection(i: GdbInputs, command: string): Promise<string> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Client } = require("ssh2") as typeof import("ssh2");
  const expected = Buffer.from(i.hostKey.split(" ")[1], "base64");
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.on("error", reject);
    c.on("ready", () => {
      c.exec(command, (err, stream) => {
        if (err) return reject(err);
        let out = "";
        stream.on("data", (d: Buffer) => (out += d.toString()));
        stream.stderr.on("data", (d: Buffer) => (out += d.toString()));
        stream.on("close", (code: number) => {
          c.end();
          if (code !== 0 || !/^\$1 = 0$/m.test(out)) reject(new Error(`${command} on ${i.host}: exit ${code}: ${out}`));
          else resolve(out);
        });
      });
    });
    c.connect({ host: i.host, port: i.port, username: "root", privateKey: i.privateKey, hostVerifier: (key: Buffer) => key.equals(expected) });
  });
}

// The command lines are built inside the closures (not with lockLine): a serialized
// closure captures what it references, and these must stay self-contained.
const gdbProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: GdbInputs) {
    await runOverNewConnection(inputs, `DEBUGINFOD_URLS= gdb -p ${inputs.pid} -batch -ex 'call (int)mlockall(3)'`);
    return { id: `gdb-${inputs.host}-${inputs.pid}`, outs: inputs };
  },
  async delete(_id: string, props: GdbInputs) {
    await runOverNewConnection(props, `DEBUGINFOD_URLS= gdb -p ${props.pid} -batch -ex 'call (int)munlockall()'`);
  },
};

class GdbLock extends pulumi.dynamic.Resource {
  constructor(name: string, args: GdbInputs) {
    super(gdbProvider, name, { ...args, privateKey: pulumi.secret(args.privateKey) }, { additionalSecretOutputs: ["privateKey"] });
  }
}

/**
 * The same inputs as the recipe's (a secret key included), and nothing done: what the
 * engine, the dynamic-provider plugin and the Automation API cost by themselves for this
 * many resources. No dynamic resource can be faster than this; printed as a reference.
 */
const noopProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: GdbInputs) {
    return { id: `noop-${inputs.host}-${inputs.pid}`, outs: inputs };
  },
  async delete() {
    return;
  },
};

class NoopLock extends pulumi.dynamic.Resource {
  constructor(name: string, args: GdbInputs) {
    super(noopProvider, name, { ...args, privateKey: pulumi.secret(args.privateKey) }, { additionalSecretOutputs: ["privateKey"] });
  }
}

/**
 * remote.Command 1.2.1's connection has `hostKey` (an authorized_keys line; the plugin
 * verifies it with ssh.FixedHostKey and ignores host keys only when it is absent), so the
 * recipe checks host keys as strictly as lockmem does. The plugin marks `connection` secret.
 */
function realRecipe(name: string, args: GdbInputs): void {
  new remote.Command(name, {
    connection: { host: args.host, port: args.port, user: "root", privateKey: pulumi.secret(args.privateKey), hostKey: args.hostKey },
    create: lockLine(args.pid),
    delete: unlockLine(args.pid),
  });
}

export function program(approach: Approach, fleet: Fleet): () => Promise<Record<string, never>> {
  return async () => {
    fleet.targets.forEach(({ host, target }, n) => {
      const h = fleet.fx.hosts[host];
      if (approach === "lockmem" || approach === "resident") {
        new LockedProcessMemory(`t${n}`, {
          connection: { host: h.address, port: h.port, user: "root", privateKey: fleet.fx.userKey.privateKey, hostKey: h.hostKey },
          // Every host here is this machine: one agent folder per host, as separate machines have.
          agent: approach === "resident" ? { dir: `${fleet.agentBase}/host-${host}`, lingerSeconds: RESIDENT_LINGER } : undefined,
          target: { pid: target.pid },
          mappings: { all: true },
          future: true,
        });
        return;
      }
      const args = { host: h.address, port: h.port, privateKey: fleet.fx.userKey.privateKey, hostKey: h.hostKey, pid: target.pid };
      if (approach === "command") realRecipe(`t${n}`, args);
      else if (approach === "gdb") new GdbLock(`t${n}`, args);
      else new NoopLock(`t${n}`, args);
    });
    return {};
  };
}
