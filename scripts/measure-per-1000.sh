#!/usr/bin/env bash
# The daemon's CPU time and peak RSS per 1,000 readings, natively or under
# qemu-user (docs/performance.md, "Per 1,000 readings, native and emulated").
#
# Usage: scripts/measure-per-1000.sh BINARY [SECONDS] [-- RUNNER...]
#   BINARY   an iomt-edge binary (the host's, or an ARM one with a RUNNER)
#   SECONDS  how long the gateway runs (default 60)
#   RUNNER   a command to run it with, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`
# Examples:
#   scripts/measure-per-1000.sh target/release/iomt-edge 60
#   scripts/measure-per-1000.sh target/aarch64-unknown-linux-gnu/release/iomt-edge.stripped 60 \
#       -- qemu-aarch64 -L /usr/aarch64-linux-gnu
#
# What runs: `iomt-edge run` with four simulated devices (two straps, two
# oximeters, a sample every 20 ms each: about 250 readings/s with the straps'
# RR intervals), the file sink, the default outbox (durable group commit) and
# forwarder, in a temporary folder; SIGTERM after SECONDS. CPU time is the
# process's user + system time from /proc (under qemu-user: qemu's, so it
# includes the translation of every ARM instruction); peak RSS is VmHWM. The
# readings counted are those in the file at that moment (the last batch, up to
# the forwarder's batch age, is not yet there). One line on standard output:
#   readings=N cpu_s=S peak_rss_kib=K cpu_ms_per_1000=X
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }
[[ ${1:-} == -h || ${1:-} == --help ]] && { usage; exit 0; }
[[ $# -ge 1 ]] || { usage; exit 2; }
BIN=$(realpath "$1")
shift
SECS=60
if [[ $# -gt 0 && $1 != -- ]]; then
  SECS=$1
  shift
fi
RUNNER=()
if [[ ${1:-} == -- ]]; then
  shift
  RUNNER=("$@")
fi
[[ -x $BIN ]] || { echo "measure-per-1000.sh: $BIN is not an executable" >&2; exit 2; }

DIR=$(mktemp -d)
P=
cleanup() {
  [[ -n $P ]] && kill -9 "$P" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
{
  printf '[gateway]\nid = "per-1000"\nstate_dir = "%s/state"\n' "$DIR"
  for i in 0 1 2 3; do
    kind=heart_rate_strap
    ((i % 2)) && kind=pulse_oximeter
    printf '[[device]]\nid = "sim-%d"\nkind = "%s"\n[device.simulated]\ninterval_ms = 20\nseed = %d\n' "$i" "$kind" "$((i + 1))"
  done
  printf '[sink.file]\npath = "%s/out.ndjson"\n' "$DIR"
} >"$DIR/config.toml"

RUST_LOG=error "${RUNNER[@]}" "$BIN" run --config "$DIR/config.toml" 2>"$DIR/log" &
P=$!
sleep "$SECS"
# CPU time and peak RSS just before the stop, of the process itself (qemu-user
# runs the program in its own process, so this is the emulated gateway).
cpu=$(awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$P/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$P/status")
readings=$(grep -o '"seq":' "$DIR/out.ndjson" | wc -l)
kill -TERM "$P"
wait "$P" || { echo "the gateway did not stop cleanly; its log:" >&2; tail -20 "$DIR/log" >&2; exit 1; }
P=
((readings > 0)) || { echo "no reading was delivered; the log:" >&2; tail -20 "$DIR/log" >&2; exit 1; }
per=$(awk -v c="$cpu" -v n="$readings" 'BEGIN {printf "%.1f", c * 1000 * 1000 / n}')
echo "readings=$readings cpu_s=$cpu peak_rss_kib=$hwm cpu_ms_per_1000=$per"
