// The probe's C library line (provider/agent/host-probe.ts LIBC_PROBE), run by this machine's
// sh: with getconf and ldd on the PATH, and on a glibc host that has neither (busybox systems,
// like the arm64 guest), where the runtime used to be refused with "this host has sh: ldd:
// not found".
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LIBC_PROBE, glibcVersion } from "../../provider/agent/host-probe";

const libcLine = (PATH: string): string => /^libc=(.*)$/m.exec(execFileSync("/bin/sh", ["-c", LIBC_PROBE], { encoding: "utf8", env: { PATH } }))?.[1] ?? "";
const here = execFileSync("getconf", ["GNU_LIBC_VERSION"], { encoding: "utf8" }).trim().split(" ")[1];

test("with getconf on the PATH the line is its answer", () => {
  expect(glibcVersion(libcLine(process.env.PATH ?? "/usr/bin:/bin"))).toBe(here);
});

test("without getconf and ldd, glibc's libc.so.6 gives the version; no 'not found' text", () => {
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), "lockmem-probe-libc-"));
  try {
    // Only head: getconf and ldd are missing, as on the arm64 guest.
    fs.symlinkSync(execFileSync("/bin/sh", ["-c", "command -v head"], { encoding: "utf8" }).trim(), path.join(bin, "head"));
    const line = libcLine(bin);
    expect(line).not.toMatch(/not found/);
    expect(glibcVersion(line)).toBe(here);
  } finally {
    fs.rmSync(bin, { recursive: true, force: true });
  }
});
