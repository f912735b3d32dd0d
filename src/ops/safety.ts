// Safety checks before any ptrace: targets lockmem must not touch (a zombie, strict seccomp,
// another tracer) and locks the target's memory cgroup could not hold.
import * as os from "os";
import { cgroupHeadroom, readMemoryCgroup } from "../cgroup";
import { LockError } from "../errors";
import { formatBytes } from "../format";
import { minimumKernel, missingKernelFacilities } from "../kernel";
import { Plan } from "../plan";
import { ProcessRef } from "../types";
import { Snapshot } from "./snapshot";

export function refuseUnsafeTarget(snap: Snapshot): void {
  const pid = snap.ref.pid;
  const missing = missingKernelFacilities();
  if (missing.length > 0) {
    throw new LockError({
      code: "EKERNEL",
      pid,
      message: `this kernel (${os.release()}) lacks what lockmem needs to leave process ${pid} as it was: ${missing.join("; ")}`,
      hint: `run lockmem on Linux ${minimumKernel()} or later`,
    });
  }
  if (snap.status.state === "Z" || snap.status.state === "X") {
    throw new LockError({ code: "ESRCH", pid, message: `process ${pid} is a zombie: it has no memory to lock` });
  }
  if (snap.status.seccomp === 1) {
    throw new LockError({
      code: "ESECCOMP",
      pid,
      message: `process ${pid} runs in strict seccomp mode: calling mlock would kill it, so lockmem will not`,
      hint: "strict mode allows only read, write, exit and sigreturn; lock the memory from inside the program",
    });
  }
  // Seccomp mode 2 (filter): the addon evaluates the filter for every call before making
  // any, and refuses (ESECCOMP) unless it allows them all.
  if (snap.status.tracerPid !== 0) {
    throw new LockError({
      code: "EBUSY",
      pid,
      message: `process ${pid} is already traced by process ${snap.status.tracerPid} (a debugger or strace?)`,
      hint: "detach that tracer first; a process has one tracer at a time",
    });
  }
}

/** Locked pages count against the target's memory cgroup: more than it has left ends in OOM. */
export async function refuseCgroupOverflow(ref: ProcessRef, plan: Plan): Promise<void> {
  const headroom = cgroupHeadroom(await readMemoryCgroup(ref.pid));
  if (headroom !== undefined && plan.residentBytes > headroom) {
    throw new LockError({
      code: "ENOMEM",
      pid: ref.pid,
      message: `locking would make ${formatBytes(plan.residentBytes)} resident in process ${ref.pid}, but its memory cgroup has only ${formatBytes(headroom)} left before memory.max: the OOM killer would act`,
      hint: "raise the cgroup's memory.max (systemd: MemoryMax=), use --on-fault, or lock fewer mappings",
    });
  }
}
