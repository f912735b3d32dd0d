// Locks the code (r-x and rwx mappings) of one process on this machine: no SSH, no agent
// to install. Shared by index.ts (the Pulumi CLI) and run.ts (an inline runner).
// In your own project, import from "pulumi-lockmem" instead of "../../provider".
import * as pulumi from "@pulumi/pulumi";
import { LockedProcessMemory } from "../../provider";

export interface LocalExampleArgs {
  /** The process to lock. */
  pid: number;
}

export function localProgram(args: LocalExampleArgs): () => Promise<Record<string, pulumi.Output<unknown>>> {
  return async () => {
    const mem = new LockedProcessMemory("app", {
      target: { pid: args.pid },
      mappings: { permissions: ["r-x", "rwx"] },
    });
    return {
      pids: mem.processes.apply((ps) => ps.map((p) => p.pid)),
      lockedBytes: mem.lockedBytes,
      inSync: mem.inSync,
    };
  };
}
