// Runs an example program as an Automation API inline program (no Pulumi language host
// needed, only the `pulumi` CLI), with a local file backend. Used by examples/*/run.ts.
import * as fs from "fs";
import * as path from "path";
import { LocalWorkspace, PulumiFn, Stack } from "@pulumi/pulumi/automation";

/** The package root (this file runs from examples/ or dist/examples/). */
export function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, "package.json")) && fs.existsSync(path.join(dir, "examples"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`cannot find the repository root above ${__dirname}`);
  }
}

/**
 * A stack of `project` whose state lives in LOCKMEM_EXAMPLE_STATE (default
 * dist/example-stacks/<project>, inside this checkout: the provider loads
 * `pulumi-lockmem/provider-impl` by package name from there).
 */
export async function exampleStack(project: string, program: PulumiFn): Promise<Stack> {
  const dir = process.env.LOCKMEM_EXAMPLE_STATE ?? path.join(repoRoot(), "dist", "example-stacks", project);
  const backend = path.join(dir, "backend");
  fs.mkdirSync(backend, { recursive: true });
  return LocalWorkspace.createOrSelectStack(
    { stackName: "dev", projectName: project, program },
    {
      workDir: dir,
      envVars: {
        // Protects this demo state only; set your own for anything real.
        PULUMI_CONFIG_PASSPHRASE: process.env.PULUMI_CONFIG_PASSPHRASE ?? "lockmem-example",
        PULUMI_SKIP_UPDATE_CHECK: "true",
      },
      projectSettings: { name: project, runtime: "nodejs", backend: { url: `file://${backend}` } },
    },
  );
}

const print = (out: string): void => void process.stdout.write(out);

/** Runs one operation and prints what the engine prints. */
export async function runOperation(stack: Stack, op: string): Promise<void> {
  switch (op) {
    case "up": {
      const r = await stack.up({ onOutput: print });
      console.log(JSON.stringify(Object.fromEntries(Object.entries(r.outputs).map(([k, v]) => [k, v.secret ? "[secret]" : v.value])), null, 2));
      return;
    }
    case "preview":
      await stack.preview({ onOutput: print });
      return;
    case "refresh":
      await stack.refresh({ onOutput: print });
      return;
    case "destroy":
      await stack.destroy({ onOutput: print });
      return;
    default:
      throw new Error(`unknown operation ${JSON.stringify(op)}: use up, preview, refresh or destroy`);
  }
}
