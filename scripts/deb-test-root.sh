#!/usr/bin/env bash
# Makes, once, the minimal Debian `stable` root that the Debian package tests
# install the package in (tests/integration/deb_package.rs, deb_package_arm64.rs),
# as a tarball in a cache folder, and prints its path. A test fixture only,
# thrown away after each test: nothing here is for a real system.
#
# Usage: scripts/deb-test-root.sh amd64|arm64|armhf
#
#   amd64        native.
#   arm64 armhf  emulated: mmdebstrap runs in a user namespace with a
#                binfmt_misc of its own (Linux 6.7 or later) in which
#                qemu-aarch64-static / qemu-arm-static runs the root's
#                programs; the host's binfmt registrations are never touched.
#
# Needs root, mmdebstrap, unshare (util-linux), and for the emulated roots
# qemu-user-static. The cache folder is IOMT_DEB_ROOT_CACHE, else
# $CARGO_TARGET_DIR/tmp/deb-roots (target/tmp/deb-roots), where the tests
# look. The tarball's name carries a digest of this script, so changing it
# makes a new root; a root older than 30 days is made again (Debian `stable`
# moves on). The mirror is IOMT_DEBIAN_MIRROR, else the first .../debian
# mirror of this machine's apt sources, else http://deb.debian.org/debian.
#
# What the root holds: Debian's `apt` variant (the Essential:yes packages and
# apt) plus the package's Depends (so `apt-get install ./x.deb` needs no
# network) and `hostname`. What makes it quicker to make than a plain
# mmdebstrap run (docs/performance.md has the figures):
#   - no documentation, manual pages or translations are unpacked, and dpkg
#     does not sync each file (--force-unsafe-io);
#   - ca-certificates' postinst and trigger each run update-ca-certificates,
#     which under qemu starts several emulated processes per certificate
#     (about 110 s for arm64 here). While the packages are installed a stub
#     stands in for it; afterwards the root's own update-ca-certificates runs
#     once on the host (on the root's files), and its links are made to point
#     inside the root: /etc/ssl/certs is then what Debian's postinst makes
#     (the same bundle and links, compared on 2026-11-30).
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:-}
case "$arch" in
  amd64) qemu="" ;;
  arm64)
    qemu=/usr/bin/qemu-aarch64-static
    magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    ;;
  armhf)
    qemu=/usr/bin/qemu-arm-static
    magic='\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00'
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

# What the package depends on (Cargo.toml, [package.metadata.deb] depends),
# plus hostname for the tests.
packages="systemd,init-system-helpers,passwd,util-linux,libgcc-s1,ca-certificates,hostname"

cache=${IOMT_DEB_ROOT_CACHE:-${CARGO_TARGET_DIR:-target}/tmp/deb-roots}
mkdir -p "$cache"
# Leftovers: roots of other versions of this script once a month old, and
# partial tarballs of runs that were killed.
find "$cache" -maxdepth 1 \( -name 'stable-*.partial-*.tar' -mmin +180 -o -name 'stable-*.tar' -mtime +30 \) -delete
tar="$cache/stable-$arch-$(sha256sum "$0" | cut -c1-8).tar"
if [[ -s $tar ]] && [[ -z $(find "$tar" -mtime +30) ]]; then
  echo "$tar"
  exit 0
fi

mirror=${IOMT_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }
         /^deb / { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' |
    grep -m1 -E '/debian/?$' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

# Hooks run on the host with the root's path as $1.
stub='#!/bin/sh\n# iomt-edge test root: stands in while the packages are installed\nexit 0\n'
essential_hook="chroot \"\$1\" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-ca-certificates.real --add /usr/sbin/update-ca-certificates && printf '$stub' > \"\$1/usr/sbin/update-ca-certificates\" && chmod 755 \"\$1/usr/sbin/update-ca-certificates\""
customize_hook='set -e; r="$1"; rm "$r/usr/sbin/update-ca-certificates"
chroot "$r" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-ca-certificates
sh "$r/usr/sbin/update-ca-certificates" --certsconf "$r/etc/ca-certificates.conf" --certsdir "$r/usr/share/ca-certificates" \
  --localcertsdir "$r/usr/local/share/ca-certificates" --etccertsdir "$r/etc/ssl/certs" --hooksdir "$r/etc/ca-certificates/update.d"
for l in "$r"/etc/ssl/certs/*; do
  t=$(readlink "$l") || continue
  case "$t" in "$r"/*) ln -sfn "${t#"$r"}" "$l" ;; esac
done
test -s "$r/etc/ssl/certs/ca-certificates.crt"'

partial="$cache/stable-$arch.partial-$$.tar"
trap 'rm -f "$partial"' EXIT
args=(
  --variant=apt
  "--architectures=$arch"
  "--include=$packages"
  '--aptopt=Acquire::Check-Valid-Until "false"'
  '--aptopt=Acquire::Languages "none"'
  --dpkgopt=force-unsafe-io
  '--dpkgopt=path-exclude=/usr/share/doc/*'
  '--dpkgopt=path-exclude=/usr/share/man/*'
  '--dpkgopt=path-exclude=/usr/share/info/*'
  '--dpkgopt=path-exclude=/usr/share/locale/*'
  "--essential-hook=$essential_hook"
  "--customize-hook=$customize_hook"
  --format=tar
  stable "$partial" "deb $mirror stable main"
)
start=$SECONDS
if [[ -z $qemu ]]; then
  mmdebstrap "${args[@]}" </dev/null >&2
else
  [[ -x $qemu ]] || { echo "deb-test-root.sh: $qemu is missing (apt-get install qemu-user-static)" >&2; exit 1; }
  quoted=""
  for a in "${args[@]}"; do quoted+=" '${a//\'/\'\\\'\'}'"; done
  register=":iomt-test-$arch:M::$magic:$mask:$qemu:F"
  # A new user namespace (every id mapped to itself, written below from
  # outside: we are root here, so no newuidmap is needed) with its own mount,
  # PID and binfmt_misc; qemu is registered there with flag F (opened now,
  # from the host, so the root needs no copy of it). The shell stays the
  # namespace's first process: unshare's --kill-child signal survives there
  # (mmdebstrap changes its credentials, which makes the kernel forget it),
  # so killing unshare ends the whole namespace.
  unshare --user --mount --pid --uts --ipc --fork --kill-child=SIGKILL -- /bin/sh -c \
    "while [ -z \"\$(cat /proc/self/uid_map)\" ]; do sleep 0.01; done
     mount -t proc proc /proc &&
     mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc &&
     printf '%s' '$register' > /proc/sys/fs/binfmt_misc/register &&
     mmdebstrap$quoted </dev/null" >&2 &
  ns=$!
  own=$(readlink /proc/self/ns/user)
  for _ in $(seq 1 2000); do
    [[ $(readlink "/proc/$ns/ns/user" 2>/dev/null) != "$own" ]] && break
    sleep 0.01
  done
  echo "0 0 4294967295" >"/proc/$ns/uid_map"
  echo "0 0 4294967295" >"/proc/$ns/gid_map"
  wait "$ns"
fi
mv "$partial" "$tar"
trap - EXIT
echo "deb-test-root.sh: made $tar in $((SECONDS - start)) s" >&2
echo "$tar"
