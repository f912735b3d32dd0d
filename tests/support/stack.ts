// Runs Pulumi programs against the real engine for end-to-end tests.
//
// Programs run as Automation API inline programs (no Node.js language host can be had
// on our machines, see issue 8), each in a fresh stack on a file backend inside its own
// temp folder, with its own PULUMI_HOME: tests never share state, never touch the
// user's ~/.pulumi, and never download plugins. Needs `source scripts/toolchain.sh`
// first (Node >= 22, `pulumi` and the `pulumi-resource-pulumi-nodejs` shim on PATH).

import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import {
  ConfigMap,
  Deployment,
  LocalWorkspace,
  OpMap,
  OutputMap,
  PulumiFn,
  Stack,
} from "@pulumi/pulumi/automation";

/** Used when the environment gives no PULUMI_CONFIG_PASSPHRASE; protects test state only. */
const TEST_PASSPHRASE = "lockmem-test-passphrase";

export interface StackOptions {
  /** Defaults to "lockmem-test". */
  projectName?: string;
  /** Defaults to a unique name, so parallel jest workers never meet. */
  stackName?: string;
  /** Stack config, set before the first operation. */
  config?: ConfigMap;
  /** Extra environment for the CLI (and the plugins it starts). */
  envVars?: Record<string, string>;
  /**
   * The workspace folder (Pulumi.yaml is written there). Defaults to a folder inside
   * the stack's temp dir. Note: the dynamic-provider plugin runs in the cwd of this
   * process, not here.
   */
  workDir?: string;
}

/** Per-operation knobs passed through to the Automation API. */
export interface OperationOptions {
  /** Replaces the program for this operation (e.g. to change inputs between two `up`s). */
  program?: PulumiFn;
  /** Fail the operation if it would change anything. */
  expectNoChanges?: boolean;
  /** Resource operations at once (`--parallel`); the CLI's default is 4 per CPU. */
  parallel?: number;
  /** Called with the CLI's output as it comes. */
  onOutput?: (out: string) => void;
}

export interface UpOutcome {
  /** Stack outputs as plain values (secrets unwrapped: check `secretOutputs` for those). */
  outputs: Record<string, unknown>;
  /** Names of the outputs that the engine marks secret. */
  secretOutputs: string[];
  /** Resource operations counted by kind, e.g. `{ create: 2, same: 1 }`. */
  changes: OpMap;
  stdout: string;
}

export interface ChangeOutcome {
  changes: OpMap;
  stdout: string;
}

export interface TestStack {
  readonly stackName: string;
  readonly projectName: string;
  /** Temp folder owned by this stack; removed afterwards. Tests may put files here. */
  readonly dir: string;
  /** The Automation API stack, for anything this helper does not wrap. */
  readonly stack: Stack;
  up(opts?: OperationOptions): Promise<UpOutcome>;
  preview(opts?: OperationOptions): Promise<ChangeOutcome>;
  refresh(opts?: Pick<OperationOptions, "expectNoChanges">): Promise<ChangeOutcome>;
  destroy(opts?: Pick<OperationOptions, "parallel" | "onOutput">): Promise<ChangeOutcome>;
  /** The state as the CLI exports it (secrets stay encrypted). */
  exportState(): Promise<Deployment>;
  /** The raw text of the backend's state file on disk: what a leak check must read. */
  stateFileText(): string;
}

/** How many resource operations would change something (everything but "same"). */
export function countChanges(changes: OpMap): number {
  return Object.entries(changes)
    .filter(([op]) => op !== "same")
    .reduce((sum, [, n]) => sum + (n ?? 0), 0);
}

/**
 * Runs `body` with a fresh stack for `program`, then always destroys the stack's
 * resources, removes the stack and deletes its temp folder, even when `body` throws.
 * A failure of that cleanup fails the test only when the body itself succeeded.
 */
export async function withStack<T>(
  program: PulumiFn,
  body: (stack: TestStack) => Promise<T>,
  options: StackOptions = {},
): Promise<T> {
  assertToolchain();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-stack-"));
  const backendDir = path.join(dir, "backend");
  const pulumiHome = path.join(dir, "pulumi-home");
  const workDir = options.workDir ?? path.join(dir, "work");
  for (const d of [backendDir, pulumiHome, workDir]) fs.mkdirSync(d, { recursive: true });

  const projectName = options.projectName ?? "lockmem-test";
  const stackName =
    options.stackName ?? `t${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

  let stack: Stack | undefined;
  let mayHaveResources = false;
  let bodyFailed = false;
  try {
    stack = await LocalWorkspace.createOrSelectStack(
      { stackName, projectName, program },
      {
        workDir,
        pulumiHome,
        envVars: {
          PULUMI_CONFIG_PASSPHRASE: process.env.PULUMI_CONFIG_PASSPHRASE ?? TEST_PASSPHRASE,
          PULUMI_SKIP_UPDATE_CHECK: "true",
          PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
          // The dynamic-provider plugin starts in this process's cwd, not in workDir, so
          // tell our shim where the SDK is: the one that serialized the provider.
          LOCKMEM_PULUMI_SDK_DIR:
            process.env.LOCKMEM_PULUMI_SDK_DIR ?? path.dirname(require.resolve("@pulumi/pulumi/package.json")),
          ...options.envVars,
        },
        projectSettings: {
          name: projectName,
          runtime: "nodejs",
          backend: { url: `file://${backendDir}` },
        },
      },
    );
    if (options.config) await stack.setAllConfig(options.config);
    const s = stack;

    const testStack: TestStack = {
      stackName,
      projectName,
      dir,
      stack: s,
      async up(opts = {}) {
        mayHaveResources = true;
        const r = await s.up({ program: opts.program, expectNoChanges: opts.expectNoChanges, parallel: opts.parallel, onOutput: opts.onOutput });
        return {
          outputs: plainOutputs(r.outputs),
          secretOutputs: Object.keys(r.outputs).filter((k) => r.outputs[k].secret),
          changes: r.summary.resourceChanges ?? {},
          stdout: r.stdout,
        };
      },
      async preview(opts = {}) {
        const r = await s.preview({ program: opts.program, expectNoChanges: opts.expectNoChanges, parallel: opts.parallel, onOutput: opts.onOutput });
        return { changes: r.changeSummary, stdout: r.stdout };
      },
      async refresh(opts = {}) {
        const r = await s.refresh({ expectNoChanges: opts.expectNoChanges });
        return { changes: r.summary.resourceChanges ?? {}, stdout: r.stdout };
      },
      async destroy(opts = {}) {
        const r = await s.destroy({ parallel: opts.parallel, onOutput: opts.onOutput });
        mayHaveResources = false;
        return { changes: r.summary.resourceChanges ?? {}, stdout: r.stdout };
      },
      exportState: () => s.exportStack(),
      stateFileText: () => fs.readFileSync(findStateFile(backendDir, stackName), "utf8"),
    };
    return await body(testStack);
  } catch (err) {
    bodyFailed = true;
    throw err;
  } finally {
    const cleanupErrors: unknown[] = [];
    if (stack) {
      if (mayHaveResources) {
        await stack.destroy().catch((e: unknown) => cleanupErrors.push(e));
      }
      await stack.workspace
        .removeStack(stackName, { force: true })
        .catch((e: unknown) => cleanupErrors.push(e));
    }
    fs.rmSync(dir, { recursive: true, force: true });
    if (cleanupErrors.length > 0) {
      const err = new AggregateError(cleanupErrors, `cleaning up stack ${stackName} failed`);
      // Never hide the test's own failure behind a cleanup failure.
      if (bodyFailed) console.warn(err, ...cleanupErrors);
      else throw err;
    }
  }
}

/** @pulumi/pulumi needs Node >= 22; a clear message beats a failure deep in the engine. */
function assertToolchain(): void {
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 22) {
    throw new Error(
      `end-to-end tests need Node >= 22 (this is ${process.version}): run \`source scripts/toolchain.sh\` first`,
    );
  }
}

function plainOutputs(outputs: OutputMap): Record<string, unknown> {
  return Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, v.value]));
}

/**
 * The file backend's layout depends on the CLI version (project-scoped
 * `.pulumi/stacks/<project>/<stack>.json` today), so search for the file by name.
 */
function findStateFile(backendDir: string, stackName: string): string {
  const root = path.join(backendDir, ".pulumi", "stacks");
  const wanted = `${stackName}.json`;
  const pending = [root];
  while (pending.length > 0) {
    const d = pending.pop()!;
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) pending.push(p);
      else if (entry.name === wanted) return p;
    }
  }
  throw new Error(`no state file ${wanted} under ${root}`);
}
