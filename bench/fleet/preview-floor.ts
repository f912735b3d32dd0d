// `npm run bench:preview-floor` (issue 17): what `preview` of 20 resources doing nothing costs
// with each kind of provider, in one run, to tell which design change could make our
// preview as fast as the recipe's:
// - a dynamic provider (what LockedProcessMemory is): the engine starts Pulumi's Node.js
//   dynamic-provider host, which loads the whole @pulumi/pulumi SDK and the serialized closure;
// - a real provider plugin written in Node.js (`@pulumi/pulumi/provider`'s main(), a
//   `pulumi-resource-*` executable on the CLI's PATH, no schema), the shape a
//   `pulumi-resource-lockmem` plugin in this package's language would have;
// - the real @pulumi/command 1.2.1 plugin (Go), as remote.Command with commands that never
//   run in a preview (needs BENCH_COMMAND_PLUGIN, see scripts/command-plugin.sh).
// Nothing is contacted: every provider here returns at once.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { remote } from "@pulumi/command";
import { median } from "../measure";
import { withStack } from "../../tests/support/stack";
import { envInt } from "../env";
import { pinController, pinText } from "./pin";
import { findCommandPlugin, pluginEnv } from "./plugin";

const RESOURCES = envInt("BENCH_RESOURCES", 20);
const ROUNDS = envInt("BENCH_ROUNDS", 3);

type Kind = "dynamic" | "node-plugin" | "go-plugin";

const noopDynamic: pulumi.dynamic.ResourceProvider = {
  async create(inputs) {
    return { id: "noop", outs: inputs };
  },
  async diff() {
    return { changes: false };
  },
  async delete() {
    return;
  },
};

/** The Node.js plugin: an executable the engine finds on PATH as pulumi-resource-lmfloor. */
function writeNodePlugin(dir: string): void {
  const sdk = path.dirname(require.resolve("@pulumi/pulumi/package.json"));
  const js = path.join(dir, "lmfloor-plugin.js");
  fs.writeFileSync(
    js,
    [
      `const { main } = require(${JSON.stringify(path.join(sdk, "provider"))});`,
      "main({",
      '  version: "0.0.1",',
      "  async check(urn, olds, news) { return { inputs: news }; },",
      "  async diff() { return { changes: false }; },",
      '  async create(urn, inputs) { return { id: "noop", outs: inputs }; },',
      "  async delete() {},",
      "}, process.argv.slice(2));",
      "",
    ].join("\n"),
  );
  fs.writeFileSync(path.join(dir, "pulumi-resource-lmfloor"), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(js)} "$@"\n`, { mode: 0o755 });
}

class NoopDynamic extends pulumi.dynamic.Resource {
  constructor(name: string, n: number) {
    super(noopDynamic, name, { n }, {});
  }
}

/** A resource of the Node.js plugin's package: the engine starts pulumi-resource-lmfloor for it. */
class NoopPluginResource extends pulumi.CustomResource {
  constructor(name: string, n: number) {
    super("lmfloor:index:Noop", name, { n });
  }
}

function program(kind: Kind): () => Promise<Record<string, never>> {
  return async () => {
    for (let n = 0; n < RESOURCES; n++) {
      if (kind === "dynamic") new NoopDynamic(`r${n}`, n);
      else if (kind === "node-plugin") new NoopPluginResource(`r${n}`, n);
      else new remote.Command(`r${n}`, { connection: { host: "127.0.0.1", port: 1, user: "nobody", privateKey: pulumi.secret("none") }, create: "true" });
    }
    return {};
  };
}

interface Measured {
  /** Previews of the stack before its up: every resource a create to plan. */
  creates: number[];
  /** Previews after its up: every resource checked and diffed, nothing to do. */
  unchanged: number[];
  up: number;
}

async function previews(run: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = Date.now();
    await run();
    out.push(Date.now() - t0);
  }
  return out;
}

async function measure(kind: Kind, envVars: Record<string, string>): Promise<Measured> {
  const p = program(kind);
  return withStack(
    p,
    async (s) => {
      const creates = await previews(() => s.preview({ program: p }));
      // The Go plugin's up would dial: only its previews of creates are measured.
      if (kind === "go-plugin") return { creates, unchanged: [], up: NaN };
      const t0 = Date.now();
      await s.up({ program: p });
      const up = Date.now() - t0;
      const unchanged = await previews(() => s.preview({ program: p, expectNoChanges: true }));
      await s.destroy();
      return { creates, unchanged, up };
    },
    { envVars },
  );
}

async function main(): Promise<void> {
  pinController();
  console.log(pinText());
  const plugin = findCommandPlugin();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-preview-floor-"));
  try {
    writeNodePlugin(dir);
    const base = pluginEnv(plugin);
    const envVars = { ...base, PATH: `${dir}:${base.PATH ?? process.env.PATH ?? ""}` };
    const kinds: Kind[] = plugin ? ["dynamic", "node-plugin", "go-plugin"] : ["dynamic", "node-plugin"];
    const rows: string[] = [];
    const ms = (xs: number[]): string => (xs.length ? `${median(xs).toFixed(0).padStart(5)} ms (${xs.join(", ")})` : "-");
    for (const kind of kinds) {
      const r = await measure(kind, envVars);
      rows.push(`${kind.padEnd(12)} creates: ${ms(r.creates)}   nothing to do: ${ms(r.unchanged)}${Number.isNaN(r.up) ? "" : `   up ${r.up} ms`}`);
    }
    console.log(`preview of ${RESOURCES} resources whose provider does nothing, median of ${ROUNDS} (before their up: creates to plan; after it: nothing to do):`);
    for (const row of rows) console.log(row);
    if (!plugin) console.log("go-plugin: not measured (no pulumi-resource-command: run `bash scripts/command-plugin.sh` and set BENCH_COMMAND_PLUGIN)");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
