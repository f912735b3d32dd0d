// `--linger=N` of the deployed agent (src/agent/resident.ts): only a whole number of
// seconds from 1 to MAX_LINGER_SECONDS makes it linger; anything else serves as without.
import { MAX_LINGER_SECONDS } from "../../src/agent/protocol";
import { lingerOf } from "../../src/agent/resident";

test.each([
  [["--serve", "--linger=1"], 1],
  [["--serve", "--linger=600", "--bind"], 600],
  [[`--linger=${MAX_LINGER_SECONDS}`], MAX_LINGER_SECONDS],
])("%j lingers %d s", (argv, seconds) => {
  expect(lingerOf(argv)).toBe(seconds);
});

test.each([[["--serve"]], [["--linger=0"]], [["--linger=-5"]], [["--linger=1.5"]], [["--linger=1e3"]], [["--linger= 60"]], [["--linger="]], [[`--linger=${MAX_LINGER_SECONDS + 1}`]], [["--linger=0x10"]]])("%j does not linger", (argv) => {
  expect(lingerOf(argv)).toBeUndefined();
});
