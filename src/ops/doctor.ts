// doctor: every reason a lock could fail, checked without touching the target.
import * as os from "os";
import { ARCHES, hostArch, injectingArchNames } from "../arch";
import { cgroupHeadroom, readMemoryCgroup } from "../cgroup";
import { formatBytes } from "../format";
import { explainPtraceDenied } from "../inject";
import { deadSessions } from "../journal";
import { native } from "../native";
import { KERNELS_TESTED, minimumKernel, missingKernelFacilities } from "../kernel";
import { Plan, planLock } from "../plan";
import { hasCapIpcLock, readStatus } from "../proc/status";
import { ProcessRef } from "../types";
import { perProcess, resolve } from "./per-process";
import { effectiveSelection } from "../select";
import { limitReport } from "./report";
import { facts, Snapshot, snapshot } from "./snapshot";
import { DoctorCheck, DoctorProcess, HostReport, StatusRequest } from "./types";

export async function doctor(req: StatusRequest): Promise<HostReport<DoctorProcess>> {
  const refs = await resolve(req);
  const processes = await perProcess(refs, (ref) => doctorOne(req, ref), (ref, err) => ({
    pid: ref.pid,
    comm: ref.comm,
    ok: false,
    checks: [{ check: "process", ok: false, detail: err.message, hint: err.hint }],
  }));
  return { host: os.hostname(), processes };
}

async function doctorOne(req: StatusRequest, ref: ProcessRef): Promise<DoctorProcess> {
  const snap = await snapshot(ref);
  const checks: DoctorCheck[] = [await ptraceCheck(snap), architectureCheck(), kernelCheck(), await sessionCheck(ref.pid)];
  checks.push(vdsoCheck(snap), seccompCheck(snap), capIpcLockCheck(snap));
  const lockPlan = planLock(facts(snap), effectiveSelection(req.mappings), {}, native().syscalls);
  checks.push({ check: "method", ok: true, detail: methodDetail(lockPlan) }, limitCheck(snap, lockPlan), await cgroupCheck(ref.pid, lockPlan));
  return { pid: ref.pid, comm: ref.comm, ok: checks.every((c) => c.ok), checks };
}

async function ptraceCheck(snap: Snapshot): Promise<DoctorCheck> {
  const own = await readStatus(process.pid);
  const ptraceOk = ((own.capEff >> 19n) & 1n) === 1n && snap.status.tracerPid === 0;
  if (ptraceOk) return { check: "ptrace", ok: true, detail: "lockmem holds CAP_SYS_PTRACE and nobody else traces the process" };
  const why = await explainPtraceDenied(snap.ref.pid);
  return { check: "ptrace", ok: false, detail: why.message, hint: why.hint };
}

function architectureCheck(): DoctorCheck {
  const arch = hostArch();
  return arch && ARCHES[arch].injects
    ? { check: "architecture", ok: true, detail: ARCHES[arch].uname }
    : { check: "architecture", ok: false, detail: `${process.arch} is not supported yet`, hint: `lockmem injects on ${injectingArchNames()} only` };
}

function kernelCheck(): DoctorCheck {
  const missing = missingKernelFacilities();
  return missing.length === 0
    ? { check: "kernel", ok: true, detail: `Linux ${os.release()} (lockmem needs ${minimumKernel()} or later; tested on ${KERNELS_TESTED})` }
    : { check: "kernel", ok: false, detail: `Linux ${os.release()} lacks ${missing.join("; ")}`, hint: `lockmem needs Linux ${minimumKernel()} or later` };
}

async function sessionCheck(pid: number): Promise<DoctorCheck> {
  const dead = await deadSessions(pid).catch(() => []);
  return dead.length === 0
    ? { check: "lockmem session", ok: true, detail: "no unfinished lockmem session on this process" }
    : {
        check: "lockmem session",
        ok: false,
        detail: `held by a lockmem run that died mid-session (${dead.map((d) => `thread ${d.tid}${d.owner ? `, lockmem pid ${d.owner}` : ""}${d.since ? ` since ${d.since}` : ""}`).join("; ")}): the process may be stopped`,
        hint: `its guardian normally recovers it within milliseconds; \`lockmem recover --pid ${pid}\` (or any lock/unlock of it) does it now`,
      };
}

function vdsoCheck(snap: Snapshot): DoctorCheck {
  const hasVdso = snap.mappings.some((m) => m.kind === "vdso");
  return hasVdso ? { check: "vdso", ok: true, detail: "[vdso] present" } : { check: "vdso", ok: false, detail: "no [vdso] mapping", hint: "boot without vdso=0" };
}

function seccompCheck(snap: Snapshot): DoctorCheck {
  const seccompText = ["disabled", "strict", "filter"][snap.status.seccomp];
  return snap.status.seccomp === 0
    ? { check: "seccomp", ok: true, detail: "no seccomp" }
    : {
        check: "seccomp",
        ok: false,
        detail: `seccomp mode ${snap.status.seccomp} (${seccompText}): calling mlock may be denied or kill the process`,
        hint: "allow @memlock in its filter (systemd: SystemCallFilter=@memlock)",
      };
}

function capIpcLockCheck(snap: Snapshot): DoctorCheck {
  const cap = hasCapIpcLock(snap.status);
  return {
    check: "CAP_IPC_LOCK",
    ok: true,
    detail: cap ? "the process holds CAP_IPC_LOCK: RLIMIT_MEMLOCK does not apply" : `missing privilege "ipc_lock" (euid = ${snap.status.uid.effective}): RLIMIT_MEMLOCK applies`,
  };
}

function limitCheck(snap: Snapshot, lockPlan: Plan): DoctorCheck {
  const cap = hasCapIpcLock(snap.status);
  if (cap || lockPlan.neededLimit <= snap.limit.soft) {
    return { check: "RLIMIT_MEMLOCK", ok: true, detail: cap ? `${limitReport(snap.limit).soft} (not enforced)` : `${formatBytes(snap.limit.soft)} covers the ${formatBytes(lockPlan.neededLimit)} needed` };
  }
  return {
    check: "RLIMIT_MEMLOCK",
    ok: false,
    detail: `soft limit ${formatBytes(snap.limit.soft)} (hard ${limitReport(snap.limit).hard}) is below the ${formatBytes(lockPlan.neededLimit)} needed`,
    hint: lockPlan.neededLimit <= snap.limit.hard ? "pass --raise-limit" : "raise LimitMEMLOCK= in its unit or grant CAP_IPC_LOCK (the hard limit is too low too)",
  };
}

async function cgroupCheck(pid: number, lockPlan: Plan): Promise<DoctorCheck> {
  const cg = await readMemoryCgroup(pid);
  const headroom = cgroupHeadroom(cg);
  if (headroom === undefined) return { check: "memory cgroup", ok: true, detail: cg ? `${cg.path}: no memory.max` : "no memory cgroup limit found" };
  const ok = lockPlan.residentBytes <= headroom;
  return {
    check: "memory cgroup",
    ok,
    detail: `${cg?.path}: ${formatBytes(headroom)} left before memory.max; locking makes ${formatBytes(lockPlan.residentBytes)} resident`,
    ...(ok ? {} : { hint: "raise memory.max (MemoryMax=) or use --on-fault" }),
  };
}

/** Which kind of lock a selection does, and what the kernel will hold afterwards (issue 15). */
function methodDetail(plan: Plan): string {
  const sel = `${plan.selected.length} accessible mapping(s), ${formatBytes(plan.selected.reduce((a, m) => a + m.size, 0))}`;
  if (!plan.whole) return `per-mapping mlock2 of ${sel}; PROT_NONE reservations stay unlocked; VmLck after: ${formatBytes(plan.vmLckAfter)}`;
  const reserved = plan.reserved.reduce((a, m) => a + m.size, 0);
  return (
    `mlockall(MCL_CURRENT): ${sel}, and the kernel also marks ${plan.reserved.length} PROT_NONE reservation(s), ${formatBytes(reserved)}, locked ` +
    `(VmLck after: ${formatBytes(plan.vmLckAfter)}); memory made accessible there later is locked at once, as with --future; ` +
    `--all-accessible locks the accessible mappings only`
  );
}
