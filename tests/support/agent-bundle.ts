// Builds the agent the way hosts get it: one JS file (esbuild) with the prebuilt addon laid
// out as in the installed package, plus a `lockmem` wrapper script, in a world-readable temp folder so that sshd
// sessions of any test user can run it.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { repoRoot } from "./repo";


export interface AgentBundle {
  /** Folder to put on PATH: holds the `lockmem` wrapper. */
  binDir: string;
  /** The wrapper: `lockmem agent` runs the agent. */
  wrapper: string;
  /** The single-file agent. */
  js: string;
  /** Removes the folder. */
  remove(): void;
}

export function buildAgentBundle(): AgentBundle {
  const REPO = repoRoot();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-agent-"));
  fs.chmodSync(root, 0o755);
  const binDir = path.join(root, "bin");
  fs.mkdirSync(binDir, { mode: 0o755 });
  const js = path.join(root, "lockmem-agent.js");
  const esbuild = path.join(REPO, "node_modules", ".bin", "esbuild");
  const built = spawnSync(
    esbuild,
    [path.join(REPO, "src/agent/main.ts"), "--bundle", "--platform=node", "--target=node18", `--outfile=${js}`, "--log-level=error"],
    { encoding: "utf8" },
  );
  if (built.status !== 0) throw new Error(`esbuild of the agent failed: ${built.stderr}`);
  // Laid out as the installed package is: its package.json and the prebuilt addon where
  // node-gyp-build finds it (src/native.ts).
  const addon = path.join(REPO, "prebuilds", "linux-x64", "node.napi.glibc.node");
  fs.writeFileSync(path.join(root, "package.json"), JSON.stringify({ name: "pulumi-lockmem", private: true }) + "\n");
  if (fs.existsSync(addon)) {
    fs.mkdirSync(path.join(root, "prebuilds", "linux-x64"), { recursive: true, mode: 0o755 });
    fs.copyFileSync(addon, path.join(root, "prebuilds", "linux-x64", "node.napi.glibc.node"));
  }
  const wrapper = path.join(binDir, "lockmem");
  // The host's own Node (LOCKMEM_SYSTEM_NODE, set by scripts/toolchain.sh: Node 20 here)
  // runs the agent, as on a real host; the test process itself may run on Node 24 from a
  // cache under /root that unprivileged test users cannot execute.
  const node = process.env.LOCKMEM_SYSTEM_NODE || process.execPath;
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${node} ${js} "$@"\n`, { mode: 0o755 });
  for (const f of fs.readdirSync(root, { recursive: true }) as string[]) fs.chmodSync(path.join(root, f), 0o755);
  return { binDir, wrapper, js, remove: () => fs.rmSync(root, { recursive: true, force: true }) };
}
