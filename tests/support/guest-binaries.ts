// Test fixtures for guests (issue 19): the guests carry no C compiler, so the C fixtures
// (tests/fixtures/*.c) are compiled here, statically (the guest's libraries are whatever its
// initramfs holds), for the guest's architecture, and uploaded.
import { execFileSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { GuestArch } from "./guest";
import { repoRoot } from "./repo";
import { workDir } from "./target";

const COMPILERS: Record<GuestArch, { cc: string; pkg: string }> = {
  amd64: { cc: "gcc", pkg: "build-essential" },
  arm64: { cc: "aarch64-linux-gnu-gcc", pkg: "gcc-aarch64-linux-gnu (g++-aarch64-linux-gnu brings it)" },
};

/** A static build of tests/fixtures/<fixture>.c for `arch`, rebuilt when the source is newer. */
export function staticFixture(fixture: "target" | "waiters", arch: GuestArch): string {
  return staticBinary(path.join(repoRoot(), "tests", "fixtures", `${fixture}.c`), arch);
}

/** A static build of the C file `source` for `arch`, rebuilt when the source is newer. */
export function staticBinary(source: string, arch: GuestArch): string {
  const binary = path.join(workDir(), "bin", `${path.basename(source, ".c")}-static-${arch}`);
  if (fs.existsSync(binary) && fs.statSync(binary).mtimeMs >= fs.statSync(source).mtimeMs) return binary;
  fs.mkdirSync(path.dirname(binary), { recursive: true });
  const tmp = `${binary}.${process.pid}.${crypto.randomBytes(4).toString("hex")}`;
  const { cc, pkg } = COMPILERS[arch];
  const args = ["-static", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", tmp, source, "-lrt"];
  try {
    execFileSync(cc, args, { stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { code?: string; stderr?: Buffer };
    if (e.code === "ENOENT") throw new Error(`${cc} is missing: install the Debian package ${pkg}`);
    throw new Error(`compiling ${source} for ${arch} failed: ${cc} ${args.join(" ")}\n${e.stderr?.toString() ?? ""}`);
  }
  fs.renameSync(tmp, binary);
  return binary;
}
