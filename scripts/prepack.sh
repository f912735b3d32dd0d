#!/usr/bin/env bash
# `npm pack` / `npm publish` (prepack): builds, from a clean slate, everything the package
# needs at run time and nothing else: the prebuilt addon, the compiled JS and the agent
# bundle with its manifest. "files" in package.json then picks only those.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rm -rf dist prebuilds
bash scripts/prebuild.sh
npm run --silent build:ts
npm run --silent build:agent
