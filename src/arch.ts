// The CPU architectures, in one place: Node's name for each (process.arch), the kernel's
// (`uname -m`), the folder of its prebuilt addon (node-gyp-build's layout), and whether
// lockmem can inject on it. doctor, the native loader, the syscall tables, the agent bundle,
// deploy and the runtime upload all ask here; adding an architecture starts here and in
// native/arch/<name>.cc (binding.gyp, scripts/prebuild.sh).
import * as path from "path";

/** Node's names. */
export type Arch = "x64" | "arm64";

interface ArchInfo {
  /** What `uname -m` prints (and what the kernel calls it). */
  uname: string;
  /** Other `uname -m` spellings of the same architecture. */
  unameAliases: string[];
  /** lockmem's native side injects on it (native/arch/*.cc). */
  injects: boolean;
}

export const ARCHES: Record<Arch, ArchInfo> = {
  x64: { uname: "x86_64", unameAliases: [], injects: true },
  arm64: { uname: "aarch64", unameAliases: ["arm64"], injects: true },
};

/**
 * The architectures whose addon this package ships in prebuilds/ and the agent bundle
 * carries (one bundle folder per architecture): x64 built natively, arm64 cross-compiled.
 */
export const SHIPPED_ARCHES: Arch[] = ["x64", "arm64"];

const ALL = Object.keys(ARCHES) as Arch[];

export function isArch(name: string): name is Arch {
  return (ALL as string[]).includes(name);
}

/** This process's architecture, or undefined for one lockmem does not know. */
export function hostArch(): Arch | undefined {
  return isArch(process.arch) ? process.arch : undefined;
}

/** The architecture `uname -m` names, or undefined for one lockmem does not know. */
export function archFromUname(unameM: string): Arch | undefined {
  return ALL.find((a) => ARCHES[a].uname === unameM || ARCHES[a].unameAliases.includes(unameM));
}

/** The platform name of a prebuild folder and of the bundle manifest: `linux-x64`. */
export function platformName(arch: Arch): string {
  return `linux-${arch}`;
}

/** The architecture of a platform name (`linux-x64`), or undefined. */
export function archOfPlatform(platform: string): Arch | undefined {
  const name = platform.replace(/^linux-/, "");
  return isArch(name) ? name : undefined;
}

/** The prebuilt addon of an architecture, relative to the package root. */
export function prebuiltAddonPath(arch: Arch): string {
  return path.join("prebuilds", platformName(arch), "node.napi.glibc.node");
}

/** The shipped architecture of a host by its `uname -m`, or undefined (unknown or not shipped). */
export function shippedArchForUname(unameM: string): Arch | undefined {
  const arch = archFromUname(unameM);
  return arch && SHIPPED_ARCHES.includes(arch) ? arch : undefined;
}

/** The `uname -m` spellings of an architecture (its kernel name first). */
export function unameNames(arch: Arch): string[] {
  return [ARCHES[arch].uname, ...ARCHES[arch].unameAliases];
}

/** The architectures lockmem injects on, by their kernel names ("x86_64"). */
export function injectingArchNames(): string {
  return ALL.filter((a) => ARCHES[a].injects)
    .map((a) => ARCHES[a].uname)
    .join(", ");
}
