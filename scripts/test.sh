#!/usr/bin/env bash
# Runs every test of iomt-edge on a fresh Debian/Ubuntu machine.
#
# Installs what the tests need when it is missing:
#   - system packages listed in scripts/apt-test-packages.txt (dbus-daemon, systemd-analyze, ...)
#   - cargo-deb (the Debian package tests build the .deb with it)
#   - the Python cross-check clients listed in scripts/requirements-test.txt
#     (bleak, azure-iot-device, fhir.resources) into .venv-test/
# then runs the whole suite with cargo. Independent clients are required here:
# IOMT_REQUIRE_ALL=1 makes a test fail (not skip) when its tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
while read -r pkg cmd; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  if ! command -v "${cmd:-$pkg}" >/dev/null 2>&1; then need_apt+=("$pkg"); fi
done < scripts/apt-test-packages.txt
if ((${#need_apt[@]})); then
  echo "==> installing system packages: ${need_apt[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [[ ! -x .venv-test/bin/python ]] || ! cmp -s scripts/requirements-test.txt .venv-test/.requirements; then
  echo "==> preparing .venv-test (Python cross-check clients)"
  python3 -m venv .venv-test || { rm -rf .venv-test; python3 -m venv --without-pip .venv-test; }
  .venv-test/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv-test/bin/python -m pip install -q -r scripts/requirements-test.txt
  cp scripts/requirements-test.txt .venv-test/.requirements
fi

export IOMT_TEST_PYTHON="$PWD/.venv-test/bin/python"
export IOMT_REQUIRE_ALL=1
export RUST_BACKTRACE=1

# A cold test build needs about 1.5 GB under target/; say so plainly up front
# rather than letting the linker die half-way with a bus error.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR==2 {print $4}')
if [[ -n "$free_kb" && "$free_kb" -lt 3000000 ]]; then
  echo "warning: only $((free_kb / 1024)) MB free for $target_dir; a cold test build needs about 1.5 GB" >&2
fi

# Formatting and lints are part of the suite (rustfmt.toml; clippy with every
# warning an error), so CI fails on them as on a test.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "==> installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi
# The Debian package tests (tests/integration/deb_package.rs) build the .deb with cargo-deb.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "==> installing cargo-deb"
  cargo install cargo-deb --locked --version 3.8.0
fi

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "==> cargo test"
cargo test --all-targets --no-fail-fast "$@"
