#!/usr/bin/env bash
# The test command (`npm test`): toolchain, build, then every jest suite against real
# processes, a real sshd and the real Pulumi engine. Prints one closing line
# "jest: N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/toolchain.sh || exit 1

# The addon and the compiled CLI are what the tests run as subprocesses. The package has no
# install script (users get the prebuilt addon), so the addon is built here from source.
addon=prebuilds/linux-x64/node.napi.glibc.node
if [ ! -f build/Release/lockmem.node ] || [ ! -f "$addon" ] || [ -n "$(find native binding.gyp -newer "$addon" 2>/dev/null | head -1)" ]; then
  npm run --silent build:native
fi
npm run --silent build:ts
npm run --silent build:agent

results=$(mktemp /tmp/lockmem-jest.XXXXXX.json)
set +e
npx jest --runInBand --json --outputFile="$results" "$@"
code=$?
set -e
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`jest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' "$results" || true
rm -f "$results"
exit "$code"
