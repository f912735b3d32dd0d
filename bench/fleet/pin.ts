// BENCH_PIN (config.ts): the controller on CPU 0, the hosts and their targets on the other
// CPUs, so that busy targets load the hosts as they would in production (other machines),
// not the controller. taskset -a: every thread; processes started later inherit it.
import { execFileSync } from "child_process";
import * as os from "os";
import { PIN } from "./config";

const HOST_CPUS = `1-${os.cpus().length - 1}`;

function taskset(cpus: string, pid: number): void {
  execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}

/** This process (and the engine, plugins and everything it starts from now on) on CPU 0. */
export function pinController(): void {
  if (PIN) taskset("0", process.pid);
}

/** A host's sshd (its sessions inherit it) or a target: on the host CPUs. */
export function pinHostSide(pid: number): void {
  if (PIN) taskset(HOST_CPUS, pid);
}

export function pinText(): string {
  return PIN ? `controller pinned to CPU 0, hosts and targets to CPU ${HOST_CPUS} (BENCH_PIN=0: all share every CPU)` : "not pinned: controller, hosts and targets share every CPU";
}
