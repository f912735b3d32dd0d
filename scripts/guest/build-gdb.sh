#!/usr/bin/env bash
# The "gdb" flavour of a guest (issue 19, `npm run bench:guest`): the image of
# scripts/guest/build.sh plus Debian's gdb for the guest's architecture, the baseline the
# bench measures lockmem against (`gdb -p PID -batch -ex 'call (int)mlockall(3)'`).
#
#   scripts/guest/build-gdb.sh SUITE ARCH      e.g. bookworm arm64
#
# Prints the flavour's folder on stdout (last line), laid out as build.sh's (kernel,
# initramfs.cpio, id_ed25519, host_key.pub, info + gdb=<version>), in
# ~/.cache/lockmem/guests/SUITE-ARCH-gdb. A separate script rather than an option of
# build.sh: build.sh's own hash is part of its images' cache key, so any edit there would
# rebuild every test image (with new keys); this one leaves them byte-identical.
#
# How: the initramfs is build.sh's cpio followed by a second cpio with gdb, its library
# closure (readelf NEEDED, as build.sh) and the Python standard library. The kernel unpacks
# concatenated newc archives in order (Documentation/driver-api/early-userspace), so the
# base image is reused as it is. Debian's gdb links libpython and initialises Python at
# start: without the standard library in /usr/lib/python3.X it dies before attaching
# ("Fatal Python error: init_fs_encoding"), hence the stdlib (LOCKMEM_GUEST_GDB=gdb-minimal
# takes Debian's Python-free build instead, ~10x smaller).
set -euo pipefail

die() { printf 'guest build (gdb): %s\n' "$*" >&2; exit 1; }
say() { printf 'guest build (gdb): %s\n' "$*" >&2; }

[ "$#" -eq 2 ] || die "usage: $0 SUITE ARCH (e.g. bookworm arm64)"
suite=$1
arch=$2
gdb_pkg=${LOCKMEM_GUEST_GDB:-gdb}
case "$gdb_pkg" in
  gdb | gdb-minimal) ;;
  *) die "LOCKMEM_GUEST_GDB must be gdb or gdb-minimal, not '$gdb_pkg'" ;;
esac
case "$arch" in
  amd64) triplet=x86_64-linux-gnu ;;
  arm64) triplet=aarch64-linux-gnu ;;
  *) die "ARCH must be amd64 or arm64, not '$arch'" ;;
esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The base image first (cached by build.sh itself); its apt lists are then fresh.
base=$(bash "$here/build.sh" "$suite" "$arch" | tail -n 1)
[ -f "$base/info" ] || die "build.sh printed no guest folder"
base_key=$(sed -n 's/^key=//p' "$base/info")

cache_root=$(dirname "$base")
name=$suite-$arch
out=$cache_root/$name-$gdb_pkg
key=$(printf 'script=%s base=%s pkg=%s' "$(sha256sum < "${BASH_SOURCE[0]}" | cut -c1-64)" "$base_key" "$gdb_pkg" | sha256sum | cut -c1-16)

exec 9>"$cache_root/.$name-$gdb_pkg.lock"
flock 9
if [ -f "$out/info" ] && grep -qx "key=$key" "$out/info"; then
  say "$name-$gdb_pkg: cached ($out)"
  echo "$out"
  exit 0
fi
started=$(date +%s)
say "$name-$gdb_pkg: building (key $key)"

# The private apt configuration of build.sh (same folders: its lists are reused).
apt_dir=$cache_root/apt/$name
[ -f "$apt_dir/sources.list" ] || die "$apt_dir/sources.list is missing: build.sh did not leave its apt config"
debs=$cache_root/debs/$name-$gdb_pkg
mkdir -p "$debs"
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
  -o "Dir::State::status=$apt_dir/status" -o "Dir::Etc::preferencesparts=$apt_dir/empty"
  -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root
)
# gdb's dependency closure as apt resolves it against an empty dpkg status (a simulated
# install: nothing is installed anywhere); only the libraries its NEEDED closure reaches
# are copied into the image below.
mapfile -t pkgs < <(apt-get "${apt_opts[@]}" -s install --no-install-recommends "$gdb_pkg" | awk '$1 == "Inst" { print $2 }')
[ "${#pkgs[@]}" -gt 0 ] || die "apt cannot resolve $gdb_pkg in $suite/$arch"
need=()
for p in "${pkgs[@]}"; do
  compgen -G "$debs/${p}_*_${arch}.deb" >/dev/null || compgen -G "$debs/${p}_*_all.deb" >/dev/null || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  (cd "$debs" && apt-get "${apt_opts[@]}" -qq download "${need[@]}") || die "apt-get download ${need[*]} failed"
fi

work=$(mktemp -d "$cache_root/.build-$name-$gdb_pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage
root=$work/root
mkdir -p "$stage" "$root/usr/bin"
for p in "${pkgs[@]}"; do
  deb=$(compgen -G "$debs/${p}_*_${arch}.deb" | head -n 1 || true)
  [ -n "$deb" ] || deb=$(compgen -G "$debs/${p}_*_all.deb" | head -n 1)
  dpkg-deb -x "$deb" "$stage"
done
gdb_version=$(compgen -G "$debs/${gdb_pkg}_*_${arch}.deb" | head -n 1 | sed 's/.*_\([^_]*\)_[^_]*\.deb$/\1/')

# Files the base image already has are left out: the second archive would only overwrite
# them with the same bytes.
in_base=" $(cpio -it --quiet < "$base/initramfs.cpio" | sed 's|^\./||' | tr '\n' ' ') "
has() { case "$in_base" in *" ${1#/} "*) return 0 ;; esac; [ -e "$root$1" ]; }

cp "$stage/usr/bin/gdb" "$root/usr/bin/gdb"
libdirs=("lib/$triplet" "usr/lib/$triplet" lib usr/lib lib64)
copy_closure() { # $1: an ELF under $root -> its NEEDED libraries from $stage, recursively
  local so d src
  for so in $(readelf -dW "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    for d in "${libdirs[@]}"; do
      src=$stage/$d/$so
      [ -e "$src" ] || continue
      if ! has "/$d/$so"; then
        mkdir -p "$root/$d"
        cp -L "$src" "$root/$d/$so"
        copy_closure "$root/$d/$so"
      fi
      continue 2
    done
    # Not in gdb's packages: the base image must have it (libc, libstdc++ ...).
    for d in "${libdirs[@]}"; do has "/$d/$so" && continue 2; done
    die "library $so (needed by $(basename "$1")) is neither in $gdb_pkg's packages nor in the base image"
  done
}
copy_closure "$root/usr/bin/gdb"

pylib=$(readelf -dW "$root/usr/bin/gdb" | sed -n 's/.*(NEEDED).*\[libpython\(3\.[0-9]*\)\.so.*/\1/p')
if [ -n "$pylib" ]; then
  # The stdlib without its tests, idle, tkinter and ensurepip's wheels: ~30 MiB less RAM.
  mkdir -p "$root/usr/lib"
  (cd "$stage/usr/lib" && tar -cf - --exclude=test --exclude=tests --exclude=idlelib --exclude=tkinter --exclude=ensurepip --exclude=__pycache__ "python$pylib") | tar -xf - -C "$root/usr/lib"
  for ext in "$root/usr/lib/python$pylib/lib-dynload/"*.so; do copy_closure "$ext"; done
fi
# gdb's own data (syntax files, its Python package); it runs without, but warns.
[ -d "$stage/usr/share/gdb" ] && mkdir -p "$root/usr/share" && cp -a "$stage/usr/share/gdb" "$root/usr/share/"

(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) > "$work/gdb.cpio"

rm -rf "$out.new"
mkdir -p "$out.new"
# The kernel and keys are the base image's: the flavour boots and logs in the same way.
cp "$base/kernel" "$base/id_ed25519" "$base/host_key.pub" "$out.new/"
cat "$base/initramfs.cpio" "$work/gdb.cpio" > "$out.new/initramfs.cpio"
{
  grep -v -e '^key=' -e '^build_seconds=' "$base/info"
  printf 'gdb=%s %s\nflavour_of=%s\nbuild_seconds=%s\nkey=%s\n' "$gdb_pkg" "$gdb_version" "$base" "$(($(date +%s) - started))" "$key"
} > "$out.new/info"
rm -rf "$out"
mv "$out.new" "$out"
say "$name-$gdb_pkg: built in $(($(date +%s) - started)) s (+$(du -m "$work/gdb.cpio" | cut -f1) MiB over the base initramfs)"
echo "$out"
