// The fixed command lines that run the deployed agent on a host. Nothing from the user is
// spliced in: only folder names the provider made, hashes, and the bootstrap below. Every
// start checks what it runs against the hashes on its own command line:
// - the Node.js runtime the provider uploaded (when the host has no Node.js >= 18): sh opens
//   the binary once, hashes it through that descriptor and executes that same descriptor
//   (/proc/self/fd/3), so the inode that was hashed is the one that runs;
// - the bundle: BOOT reads the JS and the addon once each, checks both, runs the JS from
//   memory and hands it the addon's bytes (src/agent/verified-addon.ts loads those, never a
//   path). A file that does not match is never run: the provider sees the refusal (exit 86),
//   uploads again and retries once.
import { AGENT_ADDON, AGENT_JS, AgentBundle } from "./bundle";
import { RESIDENT_LINE, SOCKET_NAME } from "../../src/agent/protocol";

/** Exit status of the bootstrap when a file does not match its hash. */
export const EXIT_HASH_MISMATCH = 86;
export const HASH_MISMATCH_TEXT = "do not match their sha256";

/**
 * Runs on the host as `node -e BOOT DIR JS_SHA256 ADDON_SHA256`. No single quote inside:
 * it travels single-quoted through the remote shell.
 */
const BOOT = [
  'const c=require("crypto"),f=require("fs"),p=require("path"),M=require("module");',
  "const [d,hj,ha]=process.argv.slice(1);",
  'const h=(b)=>c.createHash("sha256").update(b).digest("hex");',
  `const js=f.readFileSync(p.join(d,"${AGENT_JS}")),a=f.readFileSync(p.join(d,"${AGENT_ADDON}"));`,
  `if(h(js)!==hj||h(a)!==ha){process.stderr.write("lockmem: the agent files in "+d+" ${HASH_MISMATCH_TEXT}: refusing to run them\\n");process.exit(${EXIT_HASH_MISMATCH});}`,
  'globalThis[Symbol.for("lockmem.agent.bootstrap")]={dir:d,addon:a};',
  `const m=new M(p.join(d,"${AGENT_JS}"),null);m.filename=m.id;m.paths=[];m._compile(js.toString("utf8"),m.filename);`,
].join("");

/**
 * sh script: $1 the runtime binary, $2 its sha256, then node's arguments. `[ -r ]` first:
 * a failed redirection of `exec` would end sh without our message.
 */
const RUN_RUNTIME =
  '[ -r "$1" ] && exec 3<"$1" && [ "$(sha256sum <&3)" = "$2  -" ] || ' +
  `{ echo "lockmem: the agent files in $1 ${HASH_MISMATCH_TEXT}: refusing to run them" >&2; exit ${EXIT_HASH_MISMATCH}; }; ` +
  'shift 2; exec /proc/self/fd/3 "$@"';

/** Single-quotes for a POSIX shell. */
export function q(s: string): string {
  return /^[A-Za-z0-9_./+=:@-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/** `dir` as a shell word: "~/x" becomes "$HOME"/x. */
export function shellDir(dir: string): string {
  return dir.startsWith("~/") ? `"$HOME"/${q(dir.slice(2))}` : q(dir);
}

/** An uploaded Node.js runtime on the host: its binary (a shell word) and the binary's sha256. */
export interface RuntimeOnHost {
  file: string;
  sha256: string;
}

function bootArgs(dir: string, bundle: AgentBundle): string[] {
  return ["-e", q(BOOT), dir, bundle.manifest.files[AGENT_JS], bundle.manifest.files[AGENT_ADDON]];
}

/** With the host's own `node` (a shell word: the probe's absolute path, or "node"). */
export function hostNodeCommand(node: string, dir: string, bundle: AgentBundle): string {
  return [node, ...bootArgs(dir, bundle)].join(" ");
}

/** With the runtime the provider uploaded, hash checked before it runs. */
export function runtimeCommand(runtime: RuntimeOnHost, dir: string, bundle: AgentBundle): string {
  return ["sh", "-c", q(RUN_RUNTIME), "sh", runtime.file, runtime.sha256, ...bootArgs(dir, bundle)].join(" ");
}


/** One architecture's part of presumedCommandPerArch. */
export interface PresumedArch {
  /** Its `uname -m` spellings. */
  unames: string[];
  runtime: RuntimeOnHost;
  dir: string;
  bundle: AgentBundle;
}

/**
 * Without asking the host first, not even its architecture: `uname -m` picks the
 * runtime and bundle folder of that architecture (each an argument group of five: runtime
 * file, its sha256, folder, JS and addon sha256); then the uploaded runtime runs when its
 * file is there (hash checked as above), else `node` from the PATH of SSH sessions. Another
 * architecture exits as a refused file does, so the caller deploys, and the probe names
 * what is missing.
 */
export function presumedCommandPerArch(arches: PresumedArch[]): string {
  const cases = arches.map((a, i) => `${a.unames.map(q).join("|")}) i=${i};;`).join(" ");
  const script = [
    "b=$1; shift",
    `case "$(uname -m)" in ${cases} *) echo "lockmem: no agent for this host's architecture ($(uname -m))" >&2; exit ${EXIT_HASH_MISMATCH};; esac`,
    "n=0; while [ $n -lt $i ]; do shift 5; n=$((n+1)); done",
    'r=$1 s=$2 d=$3 j=$4 a=$5; shift 5',
    `n=$((i+1)); while [ $n -lt ${arches.length} ]; do shift 5; n=$((n+1)); done`,
    // A resident agent of this bundle (agent.lingerSeconds, src/agent/resident.ts): name its
    // socket instead of starting Node; the provider connects to it through sshd. --bind:
    // the provider found that socket dead, start the agent (which takes the path over).
    `case " $* " in *" --bind "*) ;; *" --linger="*) [ -S "$d/${SOCKET_NAME}" ] && { printf '%s %s\\n' ${RESIDENT_LINE} "$d/${SOCKET_NAME}"; exit 0; };; esac`,
    'set -- "$r" "$s" -e "$b" "$d" "$j" "$a" "$@"',
    `if [ -e "$1" ]; then ${RUN_RUNTIME}; fi; shift 2; exec node "$@"`,
  ].join("\n");
  const groups = arches.flatMap((a) => [a.runtime.file, a.runtime.sha256, a.dir, a.bundle.manifest.files[AGENT_JS], a.bundle.manifest.files[AGENT_ADDON]]);
  return ["sh", "-c", q(script), "sh", q(BOOT), ...groups].join(" ");
}
