#!/usr/bin/env bash
# Measures the daemon's memory and CPU time for the unit's MemoryHigh=/MemoryMax=/
# CPUQuota= (docs/performance.md, "Service limits"). Phase A: 20 simulated devices
# at 100 Hz with an IoT hub that cannot be resolved, so a backlog builds up in the
# outbox; the gateway is killed with SIGKILL. Phase B: the same outbox reopened
# (after the unclean stop) and drained to a file; SIGTERM at the end.
# Usage: scripts/measure-service-memory.sh [BINARY] [PHASE_A_SECONDS] [PHASE_B_SECONDS]
# (MALLOC_ARENA_MAX is passed through, as the unit sets it.)
set -euo pipefail
BIN=${1:-target/release/iomt-edge}
A=${2:-180}
B=${3:-180}
BIN=$(realpath "$BIN")
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR"
{
  printf '[gateway]\nid = "mem-test"\nstate_dir = "%s/state"\n' "$DIR"
  for i in $(seq 0 19); do
    printf '[[device]]\nid = "sim-%d"\nkind = "heart_rate_strap"\n[device.simulated]\ninterval_ms = 10\nseed = %d\n' "$i" "$((i + 1))"
  done
} > base.toml
cp base.toml a.toml
printf '[sink.iothub]\nconnection_string = { value = "HostName=hub.invalid;DeviceId=x;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHM=" }\n' >> a.toml
printf '[gateway]\nid = "mem-test"\nstate_dir = "%s/state"\n[[device]]\nid = "sim-0"\nkind = "heart_rate_strap"\n[device.simulated]\n[sink.file]\npath = "%s/out.ndjson"\n' "$DIR" "$DIR" > b.toml
chmod 600 a.toml b.toml
sample() { awk '/VmRSS|VmHWM/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/status"; awk '{printf "cpu %.1f s\n", ($14 + $15) / 100}' "/proc/$1/stat"; }
RUST_LOG=error "$BIN" run --config a.toml 2>/dev/null & P=$!
for ((t = 5; t <= A; t += 5)); do sleep 5; echo "A t=${t}s $(sample $P)"; done
kill -9 $P; wait $P 2>/dev/null || true
"$BIN" outbox stats --state-dir state | grep -E "queued (readings|size)"
RUST_LOG=error "$BIN" run --config b.toml 2>/dev/null & P=$!
for ((t = 5; t <= B; t += 5)); do sleep 5; echo "B t=${t}s $(sample $P) messages delivered: $(wc -l < out.ndjson 2>/dev/null || echo 0)"; done
kill -TERM $P; wait $P || true
"$BIN" outbox stats --state-dir state | grep -E "queued readings"
