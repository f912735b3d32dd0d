#!/usr/bin/env bash
# Builds the native addon from source (node-gyp: needs g++, make, python3 and Node headers)
# and puts it where the package loads it from: prebuilds/<platform>-<arch>/node.napi.glibc.node,
# the layout of prebuildify that node-gyp-build reads (N-API, so one file serves every Node
# version >= 18). A contributor step, also run by `npm pack` (prepack) and scripts/test.sh:
# users never compile anything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PATH="$PWD/node_modules/.bin:$PATH" node-gyp rebuild --silent --nodedir="${npm_config_nodedir:-/usr}"
arch=$(node -p 'process.arch')
out="prebuilds/linux-${arch}"
mkdir -p "$out"
# Symbols only serve a debugger; the package carries the addon to every host.
strip --strip-unneeded -o "$out/node.napi.glibc.node.tmp" build/Release/lockmem.node
mv -f "$out/node.napi.glibc.node.tmp" "$out/node.napi.glibc.node"
echo "prebuilt $out/node.napi.glibc.node"
