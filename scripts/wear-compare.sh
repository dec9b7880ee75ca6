#!/bin/bash
# Bytes written to an SD-card-like filesystem per committed reading, for one
# gateway binary: compares builds (e.g. before and after an outbox change).
#
#   sudo scripts/wear-compare.sh BIN [DEVICES] [SECONDS]
#
# Makes a fresh ext4 (4 KiB blocks, journal, no lazy init) on a loop device,
# runs `BIN run` with DEVICES simulated devices at 1 Hz (default 2 = one bed)
# and its state folder there, waits 5 s, then counts the sectors the filesystem
# wrote to the device (/sys/block/loopN/stat: data, metadata, journal) over
# SECONDS (default 20) and the readings committed meanwhile. Needs root.
# `iomt-edge bench --wear-only` measures the same way for the binary it is.
set -euo pipefail
BIN=$(realpath "$1"); N=${2:-2}; T=${3:-20}
work=$(mktemp -d)
dev=""
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    mountpoint -q "$work/mnt" && umount "$work/mnt"
    [ -n "$dev" ] && losetup -d "$dev"
    rm -rf "$work"
}
trap cleanup EXIT
truncate -s 512M "$work/fs.img"
mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 "$work/fs.img"
dev=$(losetup -f --show "$work/fs.img")
mkdir -p "$work/mnt" "$work/run"
mount "$dev" "$work/mnt"
cfg="$work/gateway.toml"
printf '[gateway]\nid = "wear"\nstate_dir = "%s"\n[outbox]\nflush_interval_ms = 100\n[sink.file]\npath = "%s"\n' \
    "$work/mnt/state" "$work/run/delivered.ndjson" > "$cfg"
for i in $(seq 0 $((N - 1))); do
    kind=heart_rate_strap; [ $((i % 2)) = 1 ] && kind=pulse_oximeter
    printf '[[device]]\nid = "sim-%s"\nkind = "%s"\n[device.simulated]\ninterval_ms = 1000\n' "$i" "$kind" >> "$cfg"
done
stat="/sys/block/$(basename "$dev")/stat"
RUNTIME_DIRECTORY="$work/run" RUST_LOG=error "$BIN" run --report-commits --config "$cfg" > "$work/commits" 2>/dev/null &
pid=$!
sleep 5
s0=$(awk '{print $7}' "$stat"); r0=$(grep -o '\[[0-9]*,' "$work/commits" | wc -l)
sleep "$T"
s1=$(awk '{print $7}' "$stat"); r1=$(grep -o '\[[0-9]*,' "$work/commits" | wc -l)
readings=$((r1 - r0))
[ "$readings" -gt 0 ] || { echo "no readings committed; is $BIN working?" >&2; exit 1; }
echo "$BIN, $N devices: $(( (s1 - s0) * 512 / readings )) bytes to the device per reading ($readings readings in $T s)"
