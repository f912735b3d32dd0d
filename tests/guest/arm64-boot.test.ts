// The arm64 guest (issue 19): Debian bookworm's arm64 kernel under qemu's TCG, with sshd and
// Node.js inside. What the aarch64 tests build on: if this fails, they cannot run.
import { closeAll } from "../../provider/transport/ssh";
import { bootGuest, buildGuest, Guest, stopAllGuests } from "../support/guest";
import * as path from "path";
import { staticBinary, staticFixture } from "../support/guest-binaries";

jest.setTimeout(20 * 60_000);

let guest: Guest | undefined;

afterAll(async () => {
  await closeAll();
  await stopAllGuests();
});

test("bookworm/arm64 boots; sshd answers with its known host key; node -e and a static fixture run", async () => {
  const image = await buildGuest("bookworm", "arm64");
  guest = await bootGuest(image);
  const started = Date.now();
  expect((await guest.check("uname -m")).trim()).toBe("aarch64");
  expect((await guest.check("uname -r")).trim()).toBe(image.kernelRelease);
  expect((await guest.check(`node -e 'console.log(process.arch, process.version, 6 * 7)'`)).trim()).toMatch(/^arm64 v\d+\.\d+\.\d+ 42$/);
  // A cross-compiled static fixture runs (the guest has no compiler).
  await guest.upload(staticFixture("target", "arm64"), "/tmp/target");
  expect(await guest.check("/tmp/target --help")).toMatch(/usage: target/);
  // The kernel facts of tests/guest/kernel-facts.c (see kernels.test.ts), for the aarch64 work.
  await guest.upload(staticBinary(path.join(__dirname, "kernel-facts.c"), "arm64"), "/tmp/kernel-facts");
  const facts = (await guest.check("/tmp/kernel-facts")).trim();
  console.log(`kernel facts in ${image.name} (${image.kernelRelease}):\n${facts}`);
  expect(facts).toMatch(/^getsigmask_in_ppoll=real$/m);
  // arm64's generic table: ppoll is 73.
  expect(facts).toMatch(/^task_syscall=73$/m);
  console.log(
    `guest ${image.name} (${image.kernelRelease}): build ${image.cached ? `cached (${image.elapsedMs} ms; first build took ${image.buildSeconds} s)` : `cold ${image.buildSeconds} s`}, ` +
      `boot to sshd ${(guest.bootMs / 1000).toFixed(1)} s, test ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
});
