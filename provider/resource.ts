// LockedProcessMemory: keeps (part of) the memory of a running process locked in RAM.
import * as pulumi from "@pulumi/pulumi";
import type { types as commandTypes } from "@pulumi/command";
import { lockmemProvider } from "./provider";

/** Per hop: never inherited from the connection, never with a password. Throwaway hosts only. */
interface IgnoreHostKey {
  /** Accept any host key from this hop. Prefer hostKey or knownHostsPath. */
  insecureIgnoreHostKey?: pulumi.Input<boolean>;
}

/** @pulumi/command's remote connection, plus lockmem's own fields. */
export type ConnectionArgs = Omit<commandTypes.input.remote.ConnectionArgs, "proxy"> & IgnoreHostKey & {
  /** The jump host, with its own insecureIgnoreHostKey. */
  proxy?: pulumi.Input<commandTypes.input.remote.ProxyConnectionArgs & IgnoreHostKey>;
  /** Run the agent with `sudo -n` (the user needs a NOPASSWD rule for it). */
  sudo?: pulumi.Input<boolean>;
  /** known_hosts file used when hostKey is not given (default ~/.ssh/known_hosts). */
  knownHostsPath?: pulumi.Input<string>;
};

export interface AgentArgs {
  /** "auto" (default): upload this package's agent bundle to the host; "never": run `path`. */
  install?: pulumi.Input<"auto" | "never">;
  /** With install "never": the agent command (default `lockmem`, found on PATH). */
  path?: pulumi.Input<string>;
  /** With install "auto": where deployed agents live on the host (default ~/.lockmem/agent). */
  dir?: pulumi.Input<string>;
  /**
   * With install "auto": keep the agent running on the host this many seconds (up to 3600)
   * after its last request, listening on a socket only the SSH user can open, so that the
   * next runs (preview, up, refresh, destroy) reach it through sshd without starting Node
   * there. Default 0: nothing of lockmem stays on the host after the SSH session. Not with
   * connection.sudo.
   */
  lingerSeconds?: pulumi.Input<number>;
}

/** How to find the process: exactly one of pid, pidFile, systemdUnit, name, cmdline. */
export interface TargetArgs {
  pid?: pulumi.Input<number>;
  pidFile?: pulumi.Input<string>;
  systemdUnit?: pulumi.Input<string>;
  /** /proc/PID/comm, exact. */
  name?: pulumi.Input<string>;
  /** Regular expression over the command line. */
  cmdline?: pulumi.Input<string>;
  /** "one" (default): several matches are an error; "all": lock every match. */
  match?: pulumi.Input<"one" | "all">;
}

/** Which mappings; a mapping must match every given field. Default: permissions ["r-x", "rwx"]. */
export interface MappingsArgs {
  /** "r-x", "rw-", "r-xp", ... */
  permissions?: pulumi.Input<pulumi.Input<string>[]>;
  /** Globs over the mapped file's path ("libssl*", "/opt/app/**"). */
  paths?: pulumi.Input<pulumi.Input<string>[]>;
  /** "file", "anon", "heap", "stack", "shmem". */
  kinds?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Everything (mlockall); not combined with the other fields. The kernel marks PROT_NONE
   * reservations locked too: heap growth into them (JVM, Go) is locked at once, as with future.
   */
  all?: pulumi.Input<boolean>;
  /** Every accessible mapping, locked one by one (mlock2): reservations stay unlocked. Not combined with the other fields. */
  allAccessible?: pulumi.Input<boolean>;
}

export interface LockedProcessMemoryArgs {
  /** Where the process runs; omitted: this machine. Stored as a secret. */
  connection?: pulumi.Input<ConnectionArgs>;
  agent?: pulumi.Input<AgentArgs>;
  target: pulumi.Input<TargetArgs>;
  mappings?: pulumi.Input<MappingsArgs>;
  /** Also lock mappings created later (MCL_FUTURE; can make the process's later mmap fail). */
  future?: pulumi.Input<boolean>;
  /** Lock pages only as they become resident (MLOCK_ONFAULT). */
  onFault?: pulumi.Input<boolean>;
  /** Raise the process's RLIMIT_MEMLOCK as far as the lock needs; restored on delete. */
  raiseMemlockLimit?: pulumi.Input<boolean>;
}

export interface LockedProcessInfo {
  pid: number;
  /** Field 22 of /proc/PID/stat: with the pid, the identity of the process. */
  startTime: string;
  lockedBytes: number;
  lockedMappings: number;
  selectedMappings: number;
  memlockLimit: { soft: string; hard: string };
}

/** Go-style durations as customTimeouts takes them ("90s", "5m", "1h30m", "1d") in ms. */
export function durationMs(text: string | undefined): number | undefined {
  if (text === undefined || text === "") return undefined;
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
  let consumed = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * units[m[2]];
    consumed += m[0].length;
  }
  if (consumed !== text.length || total <= 0) throw new Error(`customTimeouts: cannot read the duration ${JSON.stringify(text)} (write e.g. "90s", "5m", "1h30m")`);
  return total;
}

export class LockedProcessMemory extends pulumi.dynamic.Resource {
  /** The connection's host, or this machine's host name. */
  declare readonly host: pulumi.Output<string>;
  declare readonly processes: pulumi.Output<LockedProcessInfo[]>;
  /** Bytes of selected mappings that are locked, over all processes. */
  declare readonly lockedBytes: pulumi.Output<number>;
  /** False when the last refresh found drift (restarted target, memory unlocked, ...). */
  declare readonly inSync: pulumi.Output<boolean>;
  /** What the last refresh found out of line. */
  declare readonly drift: pulumi.Output<string[]>;
  declare readonly warnings: pulumi.Output<string[]>;

  constructor(name: string, args: LockedProcessMemoryArgs, opts: pulumi.CustomResourceOptions = {}) {
    const t = opts.customTimeouts;
    const timeouts = t ? { create: durationMs(t.create), update: durationMs(t.update), delete: durationMs(t.delete) } : undefined;
    super(
      lockmemProvider,
      name,
      {
        ...args,
        // Secret as input too: additionalSecretOutputs alone leaves the inputs in plaintext.
        connection: args.connection === undefined ? undefined : pulumi.secret(args.connection),
        timeouts,
        host: undefined,
        processes: undefined,
        lockedBytes: undefined,
        inSync: undefined,
        drift: undefined,
        warnings: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts.additionalSecretOutputs ?? []), "connection"] },
      "lockmem:index:LockedProcessMemory",
    );
  }
}
