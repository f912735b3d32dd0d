// The safety suites kill lockmem at every fault point (tests/support/safety.ts FAULT_POINTS):
// that list and the faultPoint() calls in the native sources must name the same points.
import * as fs from "fs";
import * as path from "path";
import { FAULT_POINTS } from "../support/safety";

test("every faultPoint() in native/ is in FAULT_POINTS, and every listed point exists", () => {
  const dir = path.join(__dirname, "..", "..", "native");
  const inSource = new Set<string>();
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith(".cc"))) {
    for (const m of fs.readFileSync(path.join(dir, f), "utf8").matchAll(/faultPoint\("([a-z-]+)"\)/g)) inSource.add(m[1]);
  }
  expect([...inSource].sort()).toEqual([...FAULT_POINTS].sort());
});
