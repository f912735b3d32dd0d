// The one table of architectures (src/arch.ts): names, prebuild paths, what injects.
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../support/repo";
import { ARCHES, SHIPPED_ARCHES, archFromUname, archOfPlatform, hostArch, platformName, prebuiltAddonPath } from "../../src/arch";
import { hostSyscallArch, syscallsReturningEintrOnStop } from "../../src/proc/tasks";
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
