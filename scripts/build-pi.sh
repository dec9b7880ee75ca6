#!/usr/bin/env bash
# Cross-builds stripped release binaries of iomt-edge for Raspberry Pi OS on a
# Debian/Ubuntu x86_64 machine, then smoke-tests each one under qemu-user.
#
# Usage: scripts/build-pi.sh [aarch64|armv7|all] [--debug|--test] [--no-smoke]
#        scripts/build-pi.sh --help
#
#   aarch64  aarch64-unknown-linux-gnu: 64-bit Raspberry Pi OS / Debian arm64
#            (Pi 3, 4, 5, Zero 2 W). The default.
#   armv7    armv7-unknown-linux-gnueabihf: 32-bit Raspberry Pi OS / Debian armhf
#            (Pi 2 and later; not the ARMv6 Pi 1 / Zero).
#   all      both.
#   --debug     a debug build instead of release (not stripped-size representative).
#   --test      the `pi-test` profile (Cargo.toml: no optimisation, no debug info)
#               into its own target folder, target/pi-test/ (or
#               $CARGO_TARGET_DIR/pi-test), so it never waits for the lock of
#               another build: the binary the emulated package test installs
#               (tests/integration/deb_package_arm64.rs), fast to build from
#               cold, never shipped. Its path is printed as below, e.g.
#               target/pi-test/aarch64-unknown-linux-gnu/pi-test/iomt-edge.stripped
#   --no-smoke  skip the qemu smoke test.
#
# Output (the interface other scripts rely on): for each target, ONE line on
# standard output with the path of the stripped binary, relative to the repository
# root, for example
#     target/aarch64-unknown-linux-gnu/release/iomt-edge.stripped
#     target/armv7-unknown-linux-gnueabihf/release/iomt-edge.stripped
# in the order the targets were named. Everything else (progress, sizes, the smoke
# test) goes to standard error. The unstripped binary beside it keeps line tables
# for backtraces. Exit status 0 only if every build and smoke test passed.
#     bins=$(scripts/build-pi.sh all)   # two paths
#
# What it installs when missing (as root, or with sudo): Debian's cross C
# toolchains gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf with their libc
# (libc6-dev-arm64-cross / libc6-dev-armhf-cross), qemu-user, and the rustup
# targets. Nothing else is needed: the dbus crate builds its vendored libdbus and
# TLS is rustls with ring, both of which only need a C cross compiler (no
# pkg-config, no target OpenSSL or D-Bus headers).
#
# Smoke test, under qemu-aarch64 / qemu-arm with the cross libc as the loader
# prefix: `--version`, a BLE decode, `check-config` of the shipped config, and,
# when dbus-daemon is installed, the binary's real BLE stack (vendored libdbus,
# btleplug) finding the simulated BlueZ strap that the same binary serves on a
# private bus.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }

PROFILE=release
SMOKE=1
WHICH=()
for a in "$@"; do
  case "$a" in
    aarch64 | armv7) WHICH+=("$a") ;;
    all) WHICH+=(aarch64 armv7) ;;
    --debug) PROFILE=debug ;;
    --test) PROFILE=pi-test ;;
    --no-smoke) SMOKE=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-pi.sh: unknown argument '$a' (expected aarch64, armv7, all, --debug, --test, --no-smoke)" >&2; usage; exit 2 ;;
  esac
done
((${#WHICH[@]})) || WHICH=(aarch64)

log() { echo "$@" >&2; }

# target triple, GNU prefix of the cross tools, qemu binary, Debian packages
spec() {
  case "$1" in
    aarch64) echo "aarch64-unknown-linux-gnu aarch64-linux-gnu qemu-aarch64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
    armv7) echo "armv7-unknown-linux-gnueabihf arm-linux-gnueabihf qemu-arm gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
  esac
}

SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
need=()
for w in "${WHICH[@]}"; do
  read -r _ prefix qemu pkgs <<<"$(spec "$w")"
  command -v "$prefix-gcc" >/dev/null || need+=($pkgs)
  if ((SMOKE)) && ! command -v "$qemu" >/dev/null; then need+=(qemu-user); fi
done
if ((${#need[@]})); then
  log "==> installing ${need[*]}"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
fi

built=()
for w in "${WHICH[@]}"; do
  read -r triple prefix qemu _ <<<"$(spec "$w")"
  rustup target list --installed | grep -qx "$triple" || rustup target add "$triple" >&2
  up=$(echo "$triple" | tr 'a-z-' 'A-Z_')
  low=${triple//-/_}
  export "CARGO_TARGET_${up}_LINKER=$prefix-gcc"
  export "CC_${low}=$prefix-gcc" "AR_${low}=$prefix-ar"
  log "==> building for $triple ($PROFILE)"
  if [[ $PROFILE == release ]]; then
    # Sized for a Pi: optimise for size, one codegen unit, whole-program
    # (fat) LTO. Stripped aarch64: 17.3 MB with the host's release settings
    # (opt-level 3, thin LTO, 4 units), 11.8 MB with these (docs/performance.md).
    # Parsing and the outbox keep a wide margin on a Pi core at opt-level "s".
    # Unwinding stays on: the outbox catches sled's panics on a damaged store
    # to salvage it, which panic = "abort" would turn into a crash loop.
    CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
      cargo build --release --target "$triple" --bin iomt-edge >&2
    BIN="target/$triple/release/iomt-edge"
  elif [[ $PROFILE == pi-test ]]; then
    tdir="${CARGO_TARGET_DIR:-target}/pi-test"
    CARGO_TARGET_DIR="$tdir" cargo build --profile pi-test --target "$triple" --bin iomt-edge >&2
    BIN="$tdir/$triple/pi-test/iomt-edge"
  else
    cargo build --target "$triple" --bin iomt-edge >&2
    BIN="target/$triple/debug/iomt-edge"
  fi
  "$prefix-strip" -o "$BIN.stripped" "$BIN"
  if ((SMOKE)); then
    log "==> smoke test under $qemu"
    export QEMU_LD_PREFIX="/usr/$prefix"
    "$qemu" "$BIN.stripped" --version >&2
    "$qemu" "$BIN.stripped" decode ble 2a37 16 4B 2E 03 >/dev/null
    "$qemu" "$BIN.stripped" check-config config/iomt-edge.toml >/dev/null
    if command -v dbus-daemon >/dev/null; then
      busfile=$(mktemp)
      "$qemu" "$BIN.stripped" simulate bluez >"$busfile" 2>/dev/null &
      sim=$!
      for _ in $(seq 1 200); do [[ -s $busfile ]] && break; sleep 0.1; done
      found=$(DBUS_SYSTEM_BUS_ADDRESS=$(head -1 "$busfile") "$qemu" "$BIN.stripped" scan ble --duration 3s --json 2>&1 || true)
      kill "$sim" 2>/dev/null || true
      wait "$sim" 2>/dev/null || true
      rm -f "$busfile"
      [[ $found == *'"HRM-SIM"'* ]] || { log "the $w binary did not find the simulated strap over D-Bus: $found"; exit 1; }
      log "BLE over D-Bus: the $w binary found the simulated strap"
    fi
    unset QEMU_LD_PREFIX
  fi
  log "==> $BIN ($(du -h "$BIN" | cut -f1), unstripped)"
  log "    $BIN.stripped ($(stat -c %s "$BIN.stripped") bytes, $(du -h "$BIN.stripped" | cut -f1)) is ready for $triple"
  built+=("$BIN.stripped")
done
printf '%s\n' "${built[@]}"
