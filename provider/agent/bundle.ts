// The agent bundles that `agent.install: "auto"` pushes to hosts, one per architecture the
// package ships (src/arch.ts SHIPPED_ARCHES): the agent as one JS file (esbuild, target
// node18: it runs on the host's Node.js >= 18 or on the runtime the provider brings) plus
// that architecture's prebuilt addon (prebuilds/linux-<arch>/), with a manifest of version,
// architecture and sha256. Deploy picks the one of the host's `uname -m`. `npm run build`
// (and `npm pack`) makes them into dist/agent-bundle/linux-<arch>/; this file is also that
// build step (`node dist/provider/agent/bundle.js`).
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { AGENT_OPS, PROTOCOL_VERSION, REQUEST_SCHEMAS } from "../../src/agent/protocol";
import { Arch, SHIPPED_ARCHES, platformName, prebuiltAddonPath } from "../../src/arch";
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
  /** The platform of its addon: `linux-x64`, `linux-arm64`. */
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

/** The folder that holds one bundle folder per shipped architecture. */
export function bundleRoot(): string {
  return path.join(packageRoot(), "dist", "agent-bundle");
}

/** The bundle folder of one architecture: dist/agent-bundle/linux-<arch>. */
export function bundleDir(arch: Arch, root = bundleRoot()): string {
  return path.join(root, platformName(arch));
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

/** Builds every shipped architecture's bundle (needs esbuild and the prebuilt addons: a development checkout). */
export async function buildBundle(outDir = bundleRoot()): Promise<BundleManifest[]> {
  const root = packageRoot();
  for (const arch of SHIPPED_ARCHES) {
    const addon = path.join(root, prebuiltAddonPath(arch));
    if (!fs.existsSync(addon)) throw new Error(`${addon} is missing: run \`npm run build:native\` first`);
  }
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
  const version = (JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { version: string }).version;
  const js = fs.readFileSync(path.join(tmp, AGENT_JS));
  fs.rmSync(path.join(tmp, AGENT_JS));
  const manifests: BundleManifest[] = [];
  for (const arch of SHIPPED_ARCHES) {
    // The same JS in each: a host gets one folder, content-addressed by both files.
    const dir = bundleDir(arch, tmp);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, AGENT_JS), js);
    fs.copyFileSync(path.join(root, prebuiltAddonPath(arch)), path.join(dir, AGENT_ADDON));
    const files = Object.fromEntries(BUNDLE_FILES.map((f) => [f, sha256(fs.readFileSync(path.join(dir, f)))])) as BundleManifest["files"];
    const manifest: BundleManifest = { name: "lockmem-agent", version, protocol: PROTOCOL_VERSION, node: ">=18", arch: platformName(arch), files, id: bundleId(files) };
    fs.writeFileSync(path.join(dir, MANIFEST), JSON.stringify(manifest, null, 2) + "\n");
    manifests.push(manifest);
  }
  // Swap the whole folder, so a reader never sees files of two builds.
  const old = `${outDir}.old-${process.pid}`;
  if (fs.existsSync(outDir)) fs.renameSync(outDir, old);
  fs.renameSync(tmp, outDir);
  fs.rmSync(old, { recursive: true, force: true });
  return manifests;
}

const loaded = new Map<string, AgentBundle>();

/** Reads one architecture's bundle folder and checks every file against its manifest. */
export function loadBundle(arch: Arch, dir = bundleDir(arch)): AgentBundle {
  const key = `${arch}:${dir}`;
  const cached = loaded.get(key);
  if (cached) return cached;
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
  if (manifest.arch !== platformName(arch)) throw new Error(`${manifestPath} is for ${manifest.arch}, not ${platformName(arch)}: run \`npm run build\` again`);
  const bundle = { dir, manifest, contents };
  loaded.set(key, bundle);
  return bundle;
}

if (require.main === module) {
  buildBundle().then(
    (ms) => ms.forEach((m) => console.log(`agent bundle ${m.version} ${m.arch} (${m.id.slice(0, 16)}) in ${bundleRoot()}`)),
    (e: unknown) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
