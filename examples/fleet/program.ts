// Locks the same service on several hosts over SSH; the agent is pushed to each host on
// the first `up` (hosts need Node.js >= 18). Stack outputs: locked bytes per host.
// Shared by index.ts (the Pulumi CLI) and run.ts (an inline runner).
// In your own project, import from "pulumi-lockmem" instead of "../../provider".
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory, TargetArgs } from "../../provider";

export interface FleetHost {
  /** Resource name suffix and output key. */
  name: string;
  host: string;
  port?: number;
  user?: string;
  /** The host's public key line ("ssh-ed25519 AAAA..."), checked on every connection. */
  hostKey: string;
}

export interface FleetExampleArgs {
  hosts: FleetHost[];
  privateKey: pulumi.Input<string>;
  /** How to find the service on each host, e.g. { systemdUnit: "postgresql.service" }. */
  target: TargetArgs | ((host: FleetHost) => TargetArgs);
  /** Extra options for every resource (dependsOn, customTimeouts, ...). */
  opts?: pulumi.CustomResourceOptions;
  /** Where the agent goes on each host (default ~/.lockmem/agent). */
  agentDir?: (host: FleetHost) => string;
}

export function fleetProgram(args: FleetExampleArgs): () => Promise<Record<string, pulumi.Output<unknown>>> {
  return async () => {
    const lockedBytes: Record<string, pulumi.Output<number>> = {};
    const inSync: pulumi.Output<boolean>[] = [];
    for (const h of args.hosts) {
      const mem = new LockedProcessMemory(
        `service-${h.name}`,
        {
          connection: { host: h.host, port: h.port, user: h.user ?? "root", privateKey: args.privateKey, hostKey: h.hostKey },
          ...(args.agentDir ? { agent: { dir: args.agentDir(h) } } : {}),
          target: typeof args.target === "function" ? args.target(h) : args.target,
          mappings: { permissions: ["r-x", "rwx"] },
        },
        { customTimeouts: { create: "5m", update: "5m", delete: "5m" }, ...args.opts },
      );
      lockedBytes[h.name] = mem.lockedBytes;
      inSync.push(mem.inSync);
    }
    return {
      lockedBytes: pulumi.output(lockedBytes),
      allInSync: pulumi.all(inSync).apply((xs) => xs.every(Boolean)),
    };
  };
}
