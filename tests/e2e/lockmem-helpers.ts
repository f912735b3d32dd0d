// Shared by the LockedProcessMemory end-to-end tests: kernel-side assertions (read with the
// independent /proc reader, never with the code under test) and the agent bundle check.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../support/repo";
import { isLockedVma, kernelMappings } from "../support/smaps";
import { stopAllTargets } from "../support/target";

const REPO = repoRoot();

/** Mappings the kernel never locks; the default selection skips them. */
const SPECIAL = new Set(["[vdso]", "[vsyscall]", "[vvar]", "[vvar_vclock]"]);

export function mappingsWith(pid: number, perms: string): { locked: number; unlocked: number } {
  let locked = 0;
  let unlocked = 0;
  for (const m of kernelMappings(pid)) {
    if (!m.perms.startsWith(perms) || SPECIAL.has(m.path)) continue;
    if (isLockedVma(m)) locked++;
    else unlocked++;
  }
  return { locked, unlocked };
}

/** Every r-x mapping (the default selection) is locked. */
export function codeLocked(pid: number): boolean {
  const { locked, unlocked } = mappingsWith(pid, "r-x");
  return locked > 0 && unlocked === 0;
}

export function nothingLocked(pid: number): boolean {
  return kernelMappings(pid).every((m) => !isLockedVma(m));
}

/** The CLI of this checkout, run as an operator would behind Pulumi's back. */
export function lockmemCli(...args: string[]): string {
  return execFileSync(process.execPath, [path.join(REPO, "bin", "lockmem"), ...args], { encoding: "utf8" });
}

/**
 * The provider runs compiled code (dist/) and deploys dist/agent-bundle: both are made by
 * the build (`npm test` builds dist; the bundle is built here when missing or older than dist).
 */
export function ensureBuilt(): void {
  const impl = path.join(REPO, "dist", "provider", "impl", "index.js");
  if (!fs.existsSync(impl)) throw new Error(`${impl} is missing: run \`npm run build:ts\` first`);
  const manifest = path.join(REPO, "dist", "agent-bundle", "linux-x64", "manifest.json");
  const addon = path.join(REPO, "prebuilds", "linux-x64", "node.napi.glibc.node");
  const stale =
    !fs.existsSync(manifest) ||
    fs.statSync(manifest).mtimeMs < fs.statSync(impl).mtimeMs ||
    fs.statSync(manifest).mtimeMs < fs.statSync(addon).mtimeMs;
  if (stale) execFileSync(process.execPath, [path.join(REPO, "dist", "provider", "agent", "bundle.js")], { stdio: "pipe" });
}

export function uniqueName(prefix: string): string {
  return `${prefix}${Math.random().toString(36).slice(2, 8)}`.slice(0, 15);
}

/**
 * A stack workspace inside this checkout: the dynamic-provider plugin runs there and
 * loads `pulumi-lockmem/provider-impl` by package name, which from inside the package
 * resolves through its self-reference (as from a user's project through node_modules).
 */
/**
 * The usual hooks of a local e2e file: the build checked before, the stack folder and the
 * targets removed after. Returns the stack folder.
 */
export function localStackSuite(): { workDir: string; remove(): void } {
  const work = stackWorkDir();
  beforeAll(() => ensureBuilt());
  afterAll(async () => {
    work.remove();
    await stopAllTargets();
  });
  return work;
}

export function stackWorkDir(): { workDir: string; remove(): void } {
  const base = path.join(REPO, "tests", ".work", "stacks");
  fs.mkdirSync(base, { recursive: true });
  const workDir = fs.mkdtempSync(path.join(base, "s-"));
  return { workDir, remove: () => fs.rmSync(workDir, { recursive: true, force: true }) };
}
