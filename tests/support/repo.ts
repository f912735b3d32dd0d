// The repository root, for tests and benches: walked up to rather than hard-coded as
// "../..", because these helpers also run compiled from dist/ (the benches).
import * as fs from "fs";
import * as path from "path";

let root: string | undefined;

export function repoRoot(): string {
  if (root) return root;
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, "package.json")) && fs.existsSync(path.join(dir, "tests", "fixtures", "target.c"))) {
      root = dir;
      return dir;
    }
    if (path.dirname(dir) === dir) throw new Error(`cannot find the repository root (tests/fixtures/target.c) above ${__dirname}`);
  }
}
