#!/usr/bin/env bash
# Builds the native addon from source (node-gyp: needs g++, make, python3 and Node headers)
# for every architecture the package ships (src/arch.ts SHIPPED_ARCHES: linux-x64 natively,
# linux-arm64 with the aarch64-linux-gnu cross compiler, Debian's g++-aarch64-linux-gnu)
# and puts each where the package loads it from: prebuilds/<platform>-<arch>/node.napi.glibc.node,
# the layout of prebuildify that node-gyp-build reads (N-API, so one file serves every Node
# version >= 18). A Node-API addon links against no Node binary, so the host's Node headers
# (--nodedir) serve the cross build too. A contributor step, also run by `npm pack`
# (prepack) and scripts/test.sh: users never compile anything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

nodedir="${npm_config_nodedir:-/usr}"
gyp() { PATH="$PWD/node_modules/.bin:$PATH" node-gyp rebuild --silent --nodedir="$nodedir" "$@"; }

place() {  # place <arch> <strip>
  local out="prebuilds/linux-$1"
  mkdir -p "$out"
  # Symbols only serve a debugger; the package carries the addon to every host.
  "$2" --strip-unneeded -o "$out/node.napi.glibc.node.tmp" build/Release/lockmem.node
  mv -f "$out/node.napi.glibc.node.tmp" "$out/node.napi.glibc.node"
  echo "prebuilt $out/node.napi.glibc.node"
}

native=$(node -p 'process.arch')
[ "$native" = x64 ] || { echo "prebuild: builds on an x64 machine (cross-compiles arm64); this one is $native" >&2; exit 1; }

# arm64 first, so that build/Release ends up holding the native addon the tests load.
if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "prebuild: aarch64-linux-gnu-g++ not found: apt-get install g++-aarch64-linux-gnu (the linux-arm64 addon is cross-compiled)" >&2
  exit 1
fi
CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar gyp --arch=arm64
# e_machine 183 is EM_AARCH64: a build that silently used the host compiler is refused.
node -e 'process.exit(require("fs").readFileSync(process.argv[1]).readUInt16LE(18) === 183 ? 0 : 1)' build/Release/lockmem.node ||
  { echo "prebuild: the arm64 build is not an aarch64 object" >&2; exit 1; }
place arm64 aarch64-linux-gnu-strip

gyp
place x64 strip
