// scripts/guest/build.sh refuses what it cannot build with a message naming the argument
// and what it accepts, before it touches the network or the cache.
import { spawnSync } from "child_process";
import * as path from "path";
import { repoRoot } from "../support/repo";

const script = path.join(repoRoot(), "scripts", "guest", "build.sh");

function build(...args: string[]): { code: number | null; stderr: string } {
  const r = spawnSync("bash", [script, ...args], { encoding: "utf8" });
  return { code: r.status, stderr: r.stderr };
}

test("an unknown suite, an unknown architecture or a missing argument is refused", () => {
  expect(build("sid", "amd64")).toEqual({ code: 1, stderr: "guest build: SUITE must be bullseye, bookworm or trixie, not 'sid'\n" });
  expect(build("bookworm", "riscv64")).toEqual({ code: 1, stderr: "guest build: ARCH must be amd64 or arm64, not 'riscv64'\n" });
  expect(build("bookworm")).toEqual({ code: 1, stderr: `guest build: usage: ${script} SUITE ARCH (e.g. bookworm amd64)\n` });
});
