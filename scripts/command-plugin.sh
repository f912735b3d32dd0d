#!/usr/bin/env bash
# Builds the real `@pulumi/command` resource plugin (pulumi-resource-command) at the
# version the npm package pins, so that `npm run bench:fleet` can measure the recipe
# people actually use instead of our emulation of it (issue 17). Prints the binary's path.
#
#   bash scripts/command-plugin.sh            # build once (minutes), then print the path
#   BENCH_COMMAND_PLUGIN=$(bash scripts/command-plugin.sh) npm run bench:fleet
#
# Only the bench uses it: tests and CI never need the plugin (DESIGN.md, "The Pulumi engine
# in tests"). No plugin binary can be downloaded here, so it is built from a snapshot of
# github.com/pulumi/pulumi-command (a bare git directory; LOCKMEM_COMMAND_GIT_DIR, default
# the mirror the session's `fetch` tool leaves in /work/.mirror) at the release tag; its Go
# modules come from the Go proxy into the same module cache toolchain.sh uses. Nothing of
# pulumi-command is copied into this repository: source and binary live in the cache.
#
# Idempotent: a binary that reports the pinned version is reused; two callers at once build
# once (flock, as toolchain.sh does for the Pulumi CLI).
set -u

version=1.2.1
tag=v$version
cache="${LOCKMEM_CACHE:-${HOME:-/root}/.cache/lockmem}"
root="$cache/command-plugin"
src="$root/src/$tag"
bin="$root/bin/$tag"
plugin="$bin/pulumi-resource-command"
log="$root/build.log"
git_dir="${LOCKMEM_COMMAND_GIT_DIR:-/work/.mirror/pulumi+pulumi-command/repo}"

say() { printf 'command-plugin: %s\n' "$*" >&2; }

# The plugin has no flag that prints its version (it only serves gRPC), so a stamp written
# after a successful build records the tag, its commit and the binary's sha256; a binary
# that does not match its stamp (a half-written or replaced file) is rebuilt.
stamp="$plugin.stamp"
built() {
  [ -x "$plugin" ] && [ -f "$stamp" ] &&
    [ "$(cat "$stamp")" = "$tag $(sha256sum <"$plugin" | cut -d' ' -f1)" ]
}

if built; then echo "$plugin"; exit 0; fi

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null || { say "go is missing (looked on PATH and in /usr/local/go/bin)"; exit 1; }
mkdir -p "$root" "$bin" || exit 1

(
  flock 9 || exit 1
  # Another caller may have finished the build while we waited for the lock.
  if built; then exit 0; fi
  if ! [ -f "$src/provider/go.mod" ]; then
    if ! git --git-dir="$git_dir" rev-parse --verify -q "$tag^{commit}" >/dev/null 2>&1; then
      say "no tag $tag in $git_dir: put a snapshot (bare git directory) of github.com/pulumi/pulumi-command there, or set LOCKMEM_COMMAND_GIT_DIR to one"
      exit 2
    fi
    rm -rf "$src.tmp" && mkdir -p "$src.tmp" &&
      git --git-dir="$git_dir" archive "$tag" | tar -x -C "$src.tmp" &&
      mv -f "$src.tmp" "$src" || { say "cannot extract $tag from $git_dir into $src"; exit 2; }
  fi
  say "building pulumi-resource-command $tag (minutes; log: $log)"
  cd "$src/provider" || exit 1
  export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-buildvcs=false
  go build -o "$plugin.tmp" \
    -ldflags "-X github.com/pulumi/pulumi-command/provider/pkg/version.Version=$version" \
    ./cmd/pulumi-resource-command >"$log" 2>&1 && mv -f "$plugin.tmp" "$plugin" &&
    echo "$tag $(sha256sum <"$plugin" | cut -d' ' -f1)" >"$stamp"
) 9>"$root/.build.lock"
rc=$?
# 2: the source was missing, already said; anything else: the build failed.
[ $rc -eq 2 ] && exit 1
if [ $rc -ne 0 ] || ! built; then
  tail -n 30 "$log" >&2 2>/dev/null
  say "building pulumi-resource-command $tag failed (log: $log)"
  exit 1
fi
echo "$plugin"
