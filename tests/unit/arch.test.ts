// The one table of architectures (src/arch.ts): names, prebuild paths, what injects.
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../support/repo";
import { ARCHES, SHIPPED_ARCHES, archFromUname, archOfPlatform, hostArch, platformName, prebuiltAddonPath, shippedArchForUname, unameNames } from "../../src/arch";
import { hostSyscallArch, syscallName, syscallsReturningEintrOnStop } from "../../src/proc/tasks";
import { bundleDir, loadBundle } from "../../provider/agent/bundle";
import { native } from "../../src/native";
import { NODE_RUNTIMES } from "../../provider/agent/runtime";

test("uname -m names map to Node's names, and back", () => {
  expect(archFromUname("x86_64")).toBe("x64");
  expect(archFromUname("aarch64")).toBe("arm64");
  expect(archFromUname("arm64")).toBe("arm64");
  expect(archFromUname("riscv64")).toBeUndefined();
  expect(archOfPlatform("linux-x64")).toBe("x64");
  expect(archOfPlatform("linux-mips")).toBeUndefined();
  for (const a of Object.keys(ARCHES) as (keyof typeof ARCHES)[]) {
    expect(archFromUname(ARCHES[a].uname)).toBe(a);
    expect(archOfPlatform(platformName(a))).toBe(a);
  }
});

test("every shipped architecture has its prebuilt addon in the checkout, a Node runtime and a syscall table", () => {
  const root = repoRoot();
  for (const a of SHIPPED_ARCHES) {
    expect(fs.existsSync(path.join(root, prebuiltAddonPath(a)))).toBe(true);
    expect(NODE_RUNTIMES[a].pkg).toBe(`node-${platformName(a)}`);
    expect(syscallsReturningEintrOnStop(a).length).toBeGreaterThan(0);
  }
});

test("this machine's architecture is known and its syscall table is the host's", () => {
  expect(hostArch()).toBe(process.arch);
  expect(hostSyscallArch()).toBe(process.arch);
});

/** e_machine of an ELF file: 62 x86-64, 183 AArch64. */
function elfMachine(file: string): number {
  const head = fs.readFileSync(file).subarray(0, 20);
  expect(head.subarray(0, 4).toString("latin1")).toBe("\x7fELF");
  return head.readUInt16LE(18);
}

test("each prebuilt addon is built for its architecture (arm64 cross-compiled)", () => {
  const root = repoRoot();
  const machine: Record<string, number> = { x64: 62, arm64: 183 };
  expect(SHIPPED_ARCHES).toEqual(["x64", "arm64"]);
  for (const a of SHIPPED_ARCHES) expect(elfMachine(path.join(root, prebuiltAddonPath(a)))).toBe(machine[a]);
});

test("a host's uname -m picks a shipped architecture; one lockmem does not ship is refused", () => {
  expect(shippedArchForUname("x86_64")).toBe("x64");
  expect(shippedArchForUname("aarch64")).toBe("arm64");
  expect(shippedArchForUname("arm64")).toBe("arm64");
  expect(shippedArchForUname("riscv64")).toBeUndefined();
  expect(shippedArchForUname("")).toBeUndefined();
  expect(unameNames("arm64")).toEqual(["aarch64", "arm64"]);
  for (const a of SHIPPED_ARCHES) expect(ARCHES[a].injects).toBe(true);
});

test("arm64 uses the generic syscall table: epoll_pwait but no epoll_wait among the EINTR-prone calls", () => {
  const arm64 = syscallsReturningEintrOnStop("arm64");
  expect(syscallName(22, "arm64")).toBe("epoll_pwait");
  expect(syscallName(441, "arm64")).toBe("epoll_pwait2");
  expect(syscallName(232, "arm64")).toBe("syscall 232");
  expect(arm64).toEqual(expect.arrayContaining([22, 441, 426, 203]));
  // x86_64's epoll_wait (232) is no call on arm64; arm64's read (63) is not EINTR-prone.
  expect(arm64).not.toContain(232);
  expect(arm64).not.toContain(63);
  expect(syscallName(232, "x64")).toBe("epoll_wait");
  // The injector's own numbers come from the addon (native/arch/*.cc): this machine's agree with its table.
  expect(native().syscalls).toEqual(process.arch === "x64" ? { mlock2: 325, munlock: 150, mlockall: 151, munlockall: 152 } : { mlock2: 284, munlock: 229, mlockall: 230, munlockall: 231 });
});

test("the agent bundle has one folder per shipped architecture, each with that architecture's addon", () => {
  for (const a of SHIPPED_ARCHES) {
    const bundle = loadBundle(a);
    expect(bundle.dir).toBe(bundleDir(a));
    expect(bundle.manifest.arch).toBe(platformName(a));
    expect(bundle.contents["lockmem.node"].equals(fs.readFileSync(path.join(repoRoot(), prebuiltAddonPath(a))))).toBe(true);
  }
  // The same JS, so only the addon tells the folders apart.
  expect(loadBundle("x64").manifest.files["lockmem-agent.js"]).toBe(loadBundle("arm64").manifest.files["lockmem-agent.js"]);
  expect(loadBundle("x64").manifest.id).not.toBe(loadBundle("arm64").manifest.id);
  // A folder holding another architecture's manifest is refused.
  expect(() => loadBundle("arm64", bundleDir("x64"))).toThrow(/is for linux-x64, not linux-arm64/);
});
