// Where the real `@pulumi/command` plugin (pulumi-resource-command) comes from for the
// bench, in this order: BENCH_COMMAND_PLUGIN=<binary>; the binary scripts/command-plugin.sh
// builds into the cache; a user's `pulumi plugin install resource command v1.2.1` in
// $PULUMI_HOME (default ~/.pulumi). None, or BENCH_COMMAND_PLUGIN=emulation (what CI can
// run): the bench measures the emulation instead and says so.
//
// The stacks get the plugin's folder first on the CLI's PATH: with
// PULUMI_IGNORE_AMBIENT_PLUGINS unset the engine takes a `pulumi-resource-<name>` found on
// PATH before looking into PULUMI_HOME/plugins (it finds our dynamic-provider shim the
// same way), so every stack's fresh PULUMI_HOME needs no `pulumi plugin install`.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

/** The version @pulumi/command in node_modules pins (its package.json "pulumi" field). */
export const COMMAND_VERSION = "1.2.1";
const BINARY = "pulumi-resource-command";

export interface CommandPlugin {
  /** The binary. */
  file: string;
  /** How it was found, for the report. */
  source: string;
}

function cacheDir(): string {
  return process.env.LOCKMEM_CACHE ?? path.join(process.env.HOME ?? os.homedir(), ".cache", "lockmem");
}

function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

export function findCommandPlugin(): CommandPlugin | undefined {
  const given = process.env.BENCH_COMMAND_PLUGIN;
  if (given === "emulation") return undefined;
  if (given !== undefined && given !== "") {
    const file = path.resolve(given);
    if (!executable(file)) throw new TypeError(`BENCH_COMMAND_PLUGIN: ${given} is not an executable file; build it with \`bash scripts/command-plugin.sh\` (prints its path) or set it to \"emulation\" to measure the emulation`);
    if (path.basename(file) !== BINARY) throw new TypeError(`BENCH_COMMAND_PLUGIN: the engine finds plugins by file name, so the binary must be called ${BINARY} (got ${path.basename(file)})`);
    return { file, source: "BENCH_COMMAND_PLUGIN" };
  }
  const built = path.join(cacheDir(), "command-plugin", "bin", `v${COMMAND_VERSION}`, BINARY);
  if (executable(built)) return { file: built, source: "scripts/command-plugin.sh's cache" };
  const home = process.env.PULUMI_HOME ?? path.join(os.homedir(), ".pulumi");
  const installed = path.join(home, "plugins", `resource-command-v${COMMAND_VERSION}`, BINARY);
  if (executable(installed)) return { file: installed, source: `pulumi plugin install (${home})` };
  return undefined;
}

/** Environment for the stacks' CLI so that the engine loads `plugin`. */
export function pluginEnv(plugin: CommandPlugin | undefined): Record<string, string> {
  if (!plugin) return {};
  return { PATH: `${path.dirname(plugin.file)}${path.delimiter}${process.env.PATH ?? ""}` };
}
