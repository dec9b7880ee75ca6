#!/usr/bin/env bash
# Builds iomt-edge and runs the demo: simulated devices -> durable outbox -> file sink,
# with a live view. Usage: scripts/demo.sh [DURATION]   (default 30s; Ctrl-C stops earlier)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "Rust is not installed. Install it with rustup (https://rustup.rs), then run this again:" >&2
  echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
  exit 1
fi
if ! command -v cc >/dev/null 2>&1; then
  echo "==> installing a C compiler (needed by the vendored libdbus and ring)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq build-essential pkg-config >/dev/null
fi
echo "==> building (release)"
cargo build --release --quiet
exec ./target/release/iomt-edge demo --duration "${1:-30s}"
