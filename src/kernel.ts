// The running kernel against what lockmem's promises rest on. Each facility has the release
// that brought it; below the newest of them a promise could not be kept, so doctor fails and
// lock/unlock refuse before any ptrace. tests/guest runs the suites in Debian's 5.10, 6.1 and
// 6.12 kernels (and this machine's); the facts each relies on are probed there too
// (tests/guest/kernel-facts.c). Later differences are handled where they matter: the
// temporary signal mask before 5.2 (native/session.cc), VM_LOCKONFAULT's name before 6.2
// (select.ts isLockOnFault).
import * as os from "os";

export interface KernelVersion {
  major: number;
  minor: number;
}

/** What lockmem needs from the kernel, with the release that brought each. */
export const KERNEL_NEEDS: { since: KernelVersion; what: string }[] = [
  { since: { major: 3, minor: 10 }, what: "PTRACE_PEEKSIGINFO (reading a stopped thread's queued signals)" },
  { since: { major: 3, minor: 11 }, what: "PTRACE_GETSIGMASK/SETSIGMASK (holding signals back while our calls run, so none is lost)" },
  { since: { major: 4, minor: 3 }, what: "PTRACE_O_SUSPEND_SECCOMP" },
  { since: { major: 4, minor: 4 }, what: "mlock2 and MCL_ONFAULT, and PTRACE_SECCOMP_GET_FILTER (checking a seccomp filter before calling)" },
];

/** The oldest and newest kernels the test suites ran in. */
export const KERNELS_TESTED = "5.10 to 6.18";

/** major.minor of a release string ("6.1.0-50-amd64"), or undefined when it has none. */
export function parseKernelRelease(release: string): KernelVersion | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? { major: Number(m[1]), minor: Number(m[2]) } : undefined;
}

export function atLeast(v: KernelVersion, since: KernelVersion): boolean {
  return v.major !== since.major ? v.major > since.major : v.minor >= since.minor;
}

/** What this kernel lacks of KERNEL_NEEDS (empty when it has everything or cannot be read). */
export function missingKernelFacilities(release: string = os.release()): string[] {
  const v = parseKernelRelease(release);
  return v ? KERNEL_NEEDS.filter((n) => !atLeast(v, n.since)).map((n) => `${n.what}, Linux ${n.since.major}.${n.since.minor}`) : [];
}

/** The oldest release that has everything lockmem needs ("4.4"). */
export function minimumKernel(): string {
  const newest = KERNEL_NEEDS[KERNEL_NEEDS.length - 1].since;
  return `${newest.major}.${newest.minor}`;
}
