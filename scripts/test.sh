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

export IOMT_TEST_PYTHON="$PWD/.venv-test/bin/python"
export IOMT_REQUIRE_ALL=1
export RUST_BACKTRACE=1

# A cold test build needs about 1.5 GB under target/, and the arm64 test's
# binary and the Debian roots 1.2 GB more; say so plainly up front
# rather than letting the linker die half-way with a bus error.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR==2 {print $4}')
if [[ -n "$free_kb" && "$free_kb" -lt 4000000 ]]; then
  echo "warning: only $((free_kb / 1024)) MB free for $target_dir; a cold test run needs about 2.7 GB" >&2
fi

# Formatting and lints are part of the suite (rustfmt.toml; clippy with every
# warning an error), so CI fails on them as on a test.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "==> installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi
# The emulated arm64 test's binary needs Rust's aarch64 standard library. If it
# cannot be installed here, every other test still runs, and that test and this
# script fail at the end saying so.
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu ||
    echo "warning: cannot install the aarch64-unknown-linux-gnu target (rustup target add); the emulated arm64 package test will fail" >&2
fi

# The Debian package tests (tests/integration/deb_package.rs, deb_package_arm64.rs)
# need Debian `stable` roots, and the emulated arm64 one an aarch64 binary. They
# are made in the background while the native lints and tests build
# (docs/performance.md has the times): the roots with scripts/deb-test-root.sh
# (cached in target/tmp/deb-roots/; the arm64 one is mostly one emulated dpkg
# at a time, so it starts first and runs beside everything else), the binary
# with the quick-to-build `pi-test` profile into its own target folder
# (target/pi-test/, so it never waits for the native build's lock).
prep="$target_dir/deb-prep"
mkdir -p "$prep"
echo "==> making the Debian roots and the arm64 test binary in the background (logs in $prep/)"
prep_jobs=()
if [[ $(id -u) -eq 0 ]]; then # else the package tests fail, saying they need root
  scripts/deb-test-root.sh arm64 >"$prep/root-arm64" 2>"$prep/root-arm64.log" &
  prep_jobs+=($!)
  scripts/deb-test-root.sh amd64 >"$prep/root-amd64" 2>"$prep/root-amd64.log" &
  prep_jobs+=($!)
fi
scripts/build-pi.sh aarch64 --test --no-smoke >"$prep/bin-arm64" 2>"$prep/bin-arm64.log" &
prep_jobs+=($!)

if [[ ! -x .venv-test/bin/python ]] || ! cmp -s scripts/requirements-test.txt .venv-test/.requirements; then
  echo "==> preparing .venv-test (Python cross-check clients)"
  python3 -m venv .venv-test || { rm -rf .venv-test; python3 -m venv --without-pip .venv-test; }
  .venv-test/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv-test/bin/python -m pip install -q -r scripts/requirements-test.txt
  cp scripts/requirements-test.txt .venv-test/.requirements
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

echo "==> cargo test (build)"
cargo test --all-targets --no-fail-fast --no-run "$@"

echo "==> waiting for the Debian roots and the arm64 test binary"
prep_ok=1
for j in "${prep_jobs[@]}"; do wait "$j" || prep_ok=0; done
if [[ -s $prep/bin-arm64 ]]; then
  IOMT_TEST_ARM64_BIN="$(realpath "$(cat "$prep/bin-arm64")")"
  export IOMT_TEST_ARM64_BIN
fi
if ((!prep_ok)); then
  for log in "$prep"/*.log; do
    echo "--- the end of $log" >&2
    tail -n 20 "$log" >&2
  done
  echo "error: making a Debian root or the arm64 test binary failed (above); the tests that need it will fail" >&2
fi

echo "==> cargo test"
status=0
cargo test --all-targets --no-fail-fast "$@" || status=$?
((prep_ok)) || status=1
exit "$status"
