// The agent bundle the tests run on hosts as an installed `lockmem` (agent.install "never"),
// built by the code `npm pack` runs (provider/agent/bundle.ts: esbuild, the precompiled
// request validators, the prebuilt addon, the manifest), so the tests run what hosts get.
// Around it, test-only: a `lockmem` wrapper that starts it the way the provider does (the
// bootstrap of provider/agent/command.ts, which checks both files against their sha256),
// in a world-readable temp folder so that sshd sessions of any test user can run it.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { buildBundle, bundleDir, loadBundle } from "../../provider/agent/bundle";
import { hostArch } from "../../src/arch";
import { hostNodeCommand, q } from "../../provider/agent/command";

export interface AgentBundle {
  /** Folder to put on PATH: holds the `lockmem` wrapper. */
  binDir: string;
  /** The wrapper: `lockmem agent` runs the agent. */
  wrapper: string;
  /** The bundle's folder, which every agent the wrapper starts names on its command line. */
  dir: string;
  /** Removes the folder. */
  remove(): void;
}

export async function buildAgentBundle(): Promise<AgentBundle> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-agent-"));
  fs.chmodSync(root, 0o755);
  const binDir = path.join(root, "bin");
  fs.mkdirSync(binDir, { mode: 0o755 });
  // Every shipped architecture's folder is built, as for the package; this machine's is used.
  const bundles = path.join(root, "agent");
  await buildBundle(bundles);
  fs.chmodSync(bundles, 0o755);
  const arch = hostArch()!;
  const dir = bundleDir(arch, bundles);
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
  // Sticky and writable by all, like /tmp: the agent of every test user writes its private
  // copy of the addon into the bundle folder (src/agent/verified-addon.ts), and none can
  // replace the bundle's files, so the folder passes the agent's own ownership check.
  fs.chmodSync(dir, 0o1777);
  const wrapper = path.join(binDir, "lockmem");
  // The host's own Node (LOCKMEM_SYSTEM_NODE, set by scripts/toolchain.sh: Node 20 here)
  // runs the agent, as on a real host; the test process itself may run on Node 24 from a
  // cache under /root that unprivileged test users cannot execute.
  const node = process.env.LOCKMEM_SYSTEM_NODE || process.execPath;
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${hostNodeCommand(q(node), q(dir), loadBundle(arch, dir))} "$@"\n`, { mode: 0o755 });
  return { binDir, wrapper, dir, remove: () => fs.rmSync(root, { recursive: true, force: true }) };
}
