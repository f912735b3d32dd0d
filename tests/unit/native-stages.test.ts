// A native failure's `stage` decides how src/inject.ts explains it: the stages the addon
// can name (native/stage.h) and the ones TypeScript knows (NATIVE_STAGES) must be the same.
import * as fs from "fs";
import * as path from "path";
import { ERRNO, NATIVE_STAGES, NativeError } from "../../src/errors";
import { native } from "../../src/native";

const nativeDir = path.join(__dirname, "..", "..", "native");

test("native/stage.h lists exactly NATIVE_STAGES, in the same order", () => {
  const header = fs.readFileSync(path.join(nativeDir, "stage.h"), "utf8");
  const inHeader = [...header.matchAll(/X\(\s*[A-Z][A-Za-z]*\s*,\s*"([a-z-]+)"\s*\)/g)].map((m) => m[1]);
  expect(inHeader).toEqual([...NATIVE_STAGES]);
});

test("a failure of the addon is a NativeError it built itself, with its errno's name and a known stage", () => {
  // pid_max is at most 4194304 (2^22): a process with that pid cannot exist now in practice.
  const err = (() => {
    try {
      native().setMemlockLimit(4194304, { soft: 0n, hard: 0n });
    } catch (e) {
      return e;
    }
    throw new Error("prlimit of a process that does not exist succeeded");
  })();
  expect(err).toBeInstanceOf(NativeError);
  expect(err).toMatchObject({ code: "ESRCH", errno: ERRNO.ESRCH, stage: "prlimit", pid: 4194304 });
  expect(NATIVE_STAGES).toContain((err as NativeError).stage);
});
