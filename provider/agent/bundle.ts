// The agent bundle that `agent.install: "auto"` pushes to hosts: the agent as one JS file
// (esbuild, target node18: it runs on the host's Node.js >= 18 or on the runtime the
// provider brings) plus the prebuilt linux-x64 addon (prebuilds/linux-x64/), with a manifest
// of version and sha256. `npm run build` (and `npm pack`) makes it into dist/agent-bundle/;
// this file is also that build step (`node dist/provider/agent/bundle.js`).
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { AGENT_OPS, PROTOCOL_VERSION, REQUEST_SCHEMAS } from "../../src/agent/protocol";
import { BUNDLE_ARCH, platformName, prebuiltAddonPath } from "../../src/arch";
import { AJV_OPTIONS } from "../../src/agent/request-validators";

export const AGENT_JS = "lockmem-agent.js";
export const AGENT_ADDON = "lockmem.node";
export const BUNDLE_FILES = [AGENT_JS, AGENT_ADDON] as const;
export const MANIFEST = "manifest.json";

export interface BundleManifest {
  name: "lockmem-agent";
  version: string;
  protocol: number;
  /** The Node.js versions the JS file was built for. */
  node: string;
  arch: string;
  /** sha256 (hex) of each file. */
  files: Record<(typeof BUNDLE_FILES)[number], string>;
  /** sha256 over the file hashes: names the content-addressed folder on hosts. */
  id: string;
}

export interface AgentBundle {
  dir: string;
  manifest: BundleManifest;
  /** The file contents, checked against the manifest. */
  contents: Record<(typeof BUNDLE_FILES)[number], Buffer>;
}

export function sha256(data: Buffer | string): string {
  return crypto.createHash("sha256").update(data).digest("hex");
}

/** The root of this package (the folder with its package.json), from src or dist. */
export function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, "utf8")) as { name?: string }).name === "pulumi-lockmem") return dir;
    if (path.dirname(dir) === dir) throw new Error(`cannot find the pulumi-lockmem package root above ${__dirname}`);
  }
}

export function bundleDir(): string {
  return path.join(packageRoot(), "dist", "agent-bundle");
}

function bundleId(files: Record<string, string>): string {
  return sha256(BUNDLE_FILES.map((f) => `${files[f]}  ${f}\n`).join(""));
}

/**
 * What the bundle holds in place of src/agent/request-validators.ts: every request
 * validator generated ahead of time by ajv (standalone code), from the same schemas with
 * the same options, behind the same requestValidator(op) function.
 */
export function precompiledValidatorsSource(): string {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const Ajv = require("ajv").default as typeof import("ajv").default;
  const standaloneCode = require("ajv/dist/standalone").default as typeof import("ajv/dist/standalone").default;
  /* eslint-enable @typescript-eslint/no-require-imports */
  // The optimiser pass costs nothing on hosts here, and makes the code smaller to parse.
  const ajv = new Ajv({ ...AJV_OPTIONS, code: { ...AJV_OPTIONS.code, source: true, optimize: true } });
  for (const op of AGENT_OPS) ajv.addSchema(REQUEST_SCHEMAS[op], op);
  const code = standaloneCode(ajv, Object.fromEntries(AGENT_OPS.map((op) => [op, op])));
  return `${code}\nexports.requestValidator = function (op) { return exports[op]; };\n`;
}

/** The prebuilt addon the bundle carries, in node-gyp-build's layout (scripts/prebuild.sh makes it). */
export const BUNDLE_ADDON_SOURCE = prebuiltAddonPath(BUNDLE_ARCH);

/** Builds the bundle (needs esbuild and the prebuilt addon: a development checkout). */
export async function buildBundle(outDir = bundleDir()): Promise<BundleManifest> {
  const root = packageRoot();
  const addon = path.join(root, BUNDLE_ADDON_SOURCE);
  if (!fs.existsSync(addon)) throw new Error(`${addon} is missing: run \`npm run build:native\` first`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const esbuild = require("esbuild") as typeof import("esbuild");
  const tmp = `${outDir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const validators = path.join(root, "src", "agent", "request-validators.ts");
  await esbuild.build({
    entryPoints: [path.join(root, "src", "agent", "main.ts")],
    bundle: true,
    platform: "node",
    target: "node18",
    outfile: path.join(tmp, AGENT_JS),
    logLevel: "error",
    legalComments: "none",
    // Parsed on every run on the host: smaller is faster to start.
    minify: true,
    // src/native.ts: the bundle uses only the addon its bootstrap verified, never a lookup.
    define: { LOCKMEM_AGENT_BUNDLE: "true" },
    external: ["node-gyp-build"],
    plugins: [
      {
        name: "precompiled-request-validators",
        setup(build) {
          build.onLoad({ filter: /request-validators\.ts$/ }, (args) =>
            args.path === validators ? { contents: precompiledValidatorsSource(), loader: "js", resolveDir: path.dirname(validators) } : undefined,
          );
        },
      },
    ],
  });
  fs.copyFileSync(addon, path.join(tmp, AGENT_ADDON));
  const version = (JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { version: string }).version;
  const files = Object.fromEntries(BUNDLE_FILES.map((f) => [f, sha256(fs.readFileSync(path.join(tmp, f)))])) as BundleManifest["files"];
  const manifest: BundleManifest = { name: "lockmem-agent", version, protocol: PROTOCOL_VERSION, node: ">=18", arch: platformName(BUNDLE_ARCH), files, id: bundleId(files) };
  fs.writeFileSync(path.join(tmp, MANIFEST), JSON.stringify(manifest, null, 2) + "\n");
  // Swap the whole folder, so a reader never sees files of two builds.
  const old = `${outDir}.old-${process.pid}`;
  if (fs.existsSync(outDir)) fs.renameSync(outDir, old);
  fs.renameSync(tmp, outDir);
  fs.rmSync(old, { recursive: true, force: true });
  return manifest;
}

let loaded: AgentBundle | undefined;

/** Reads dist/agent-bundle and checks every file against the manifest. */
export function loadBundle(dir = bundleDir()): AgentBundle {
  if (loaded && loaded.dir === dir) return loaded;
  const manifestPath = path.join(dir, MANIFEST);
  if (!fs.existsSync(manifestPath)) {
    throw new Error(`the lockmem agent bundle is missing (${manifestPath}): run \`npm run build\` in the pulumi-lockmem package`);
  }
  const manifest = JSON.parse(fs.readFileSync(manifestPath, "utf8")) as BundleManifest;
  const contents = {} as AgentBundle["contents"];
  for (const f of BUNDLE_FILES) {
    const data = fs.readFileSync(path.join(dir, f));
    if (sha256(data) !== manifest.files[f]) throw new Error(`${path.join(dir, f)} does not match the sha256 in ${manifestPath}: run \`npm run build\` again`);
    contents[f] = data;
  }
  if (bundleId(manifest.files) !== manifest.id) throw new Error(`${manifestPath}: id does not match the file hashes`);
  loaded = { dir, manifest, contents };
  return loaded;
}

if (require.main === module) {
  buildBundle().then(
    (m) => console.log(`agent bundle ${m.version} (${m.id.slice(0, 16)}) in ${bundleDir()}`),
    (e: unknown) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
