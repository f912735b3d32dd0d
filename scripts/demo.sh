#!/usr/bin/env bash
# `npm run demo`, the main job: the CLI on a demo process (status, lock, status, unlock),
# then the same through Pulumi: examples/local's program run inline (up, preview,
# destroy) against a local file backend. Sets up what it needs first (scripts/toolchain.sh:
# Node >= 22 and the pulumi CLI, cached in ~/.cache/lockmem).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/toolchain.sh || exit 1
[ -f prebuilds/linux-x64/node.napi.glibc.node ] || npm run --silent build:native
npm run --silent build:ts
npm run --silent build:agent
echo "== lockmem CLI =="
node scripts/demo.js
echo
echo "== Pulumi: examples/local (LockedProcessMemory) =="
node dist/examples/local/run.js
