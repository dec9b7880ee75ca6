#!/usr/bin/env bash
# Cross-builds iomt-edge for a 64-bit Raspberry Pi (Raspberry Pi OS 64-bit / Debian arm64)
# on a Debian/Ubuntu x86_64 machine, then smoke-tests the binary under qemu.
#
# Usage: scripts/build-pi.sh [--debug]
# Result: target/aarch64-unknown-linux-gnu/release/iomt-edge, and a stripped copy
# iomt-edge.stripped next to it (13 MB instead of 70 MB; copy either to the Pi with
# systemd/iomt-edge.service and a config; see README "Install as a service").
#
# No system D-Bus headers are needed: the dbus crate builds its vendored libdbus.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
PROFILE=release
[[ "${1:-}" == "--debug" ]] && PROFILE=debug
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if ((${#need[@]})); then
  echo "==> installing ${need[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
echo "==> building for $TARGET ($PROFILE)"
if [[ $PROFILE == release ]]; then
  cargo build --release --target "$TARGET" --bin iomt-edge
else
  cargo build --target "$TARGET" --bin iomt-edge
fi
BIN="target/$TARGET/$PROFILE/iomt-edge"
echo "==> smoke test under qemu-aarch64"
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
qemu-aarch64 "$BIN" --version
qemu-aarch64 "$BIN" decode ble 2a37 16 4B 2E 03 >/dev/null
qemu-aarch64 "$BIN" check-config config/iomt-edge.toml >/dev/null
if command -v dbus-daemon >/dev/null; then
  # The real BLE stack of the arm64 binary (vendored libdbus, btleplug) against the
  # simulated BlueZ, which the same binary runs on a private bus.
  busfile=$(mktemp)
  qemu-aarch64 "$BIN" simulate bluez >"$busfile" 2>/dev/null &
  sim=$!
  trap 'kill $sim 2>/dev/null || true; rm -f "$busfile"' EXIT
  for _ in $(seq 1 100); do [[ -s $busfile ]] && break; sleep 0.1; done
  found=$(DBUS_SYSTEM_BUS_ADDRESS=$(head -1 "$busfile") qemu-aarch64 "$BIN" scan ble --duration 3s --json 2>&1 || true)
  [[ $found == *'"HRM-SIM"'* ]] || { echo "the arm64 binary did not find the simulated strap over D-Bus: $found" >&2; exit 1; }
  echo "BLE over D-Bus: the arm64 binary found the simulated strap"
fi
aarch64-linux-gnu-strip -o "$BIN.stripped" "$BIN"
echo "==> $BIN ($(du -h "$BIN" | cut -f1), with line tables for backtraces)"
echo "    and $BIN.stripped ($(du -h "$BIN.stripped" | cut -f1)) are ready for a 64-bit Raspberry Pi"
