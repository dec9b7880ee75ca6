#!/usr/bin/env bash
# Measures the gateway's CPU time while it reads simulated serial monitors at
# their real rates: `iomt-edge simulate serial` pseudo-terminals feed one
# `iomt-edge run` (file sink, default outbox), and the gateway's user+system
# CPU time is read from /proc/PID/stat over a measured window after a warm-up.
#
# Usage: scripts/serial-cpu.sh [--bin PATH] [--qemu QEMU] [--sim PATH]
#                              [--seconds N] [--warmup N] MONITOR...
#   MONITOR   a `simulate serial --profile` name, optionally NAME*COUNT:
#             masimo-ascii1 nonin-ascii nonin-df2 nonin-df7 nonin-df8 hl7
#             (e.g. `masimo-ascii1*2 nonin-df7*2 nonin-ascii nonin-df2 nonin-df8 hl7`)
#   --bin     the gateway binary measured (default target/release/iomt-edge)
#   --qemu    run it under this user-mode emulator, e.g. qemu-aarch64 with the
#             stripped binary of scripts/build-pi.sh (QEMU_LD_PREFIX is set to
#             the matching Debian cross libc)
#   --sim     the binary that plays the monitors (default: --bin when native,
#             else target/release/iomt-edge); its CPU time is not counted
#   --seconds length of the measured window (default 60); --warmup before it (10)
#
# Prints one line: monitors, seconds, CPU seconds, % of one core, readings
# delivered in the window, and CPU microseconds per reading.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/iomt-edge
QEMU=""
SIM=""
SECONDS_=60
WARMUP=10
MONITORS=()
while (($#)); do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --qemu) QEMU=$2; shift 2 ;;
    --sim) SIM=$2; shift 2 ;;
    --seconds) SECONDS_=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "serial-cpu.sh: unknown option $1" >&2; exit 2 ;;
    *) MONITORS+=("$1"); shift ;;
  esac
done
((${#MONITORS[@]})) || { echo "serial-cpu.sh: name at least one monitor (--help)" >&2; exit 2; }
[[ -n $SIM ]] || { [[ -z $QEMU ]] && SIM=$BIN || SIM=target/release/iomt-edge; }
case "$QEMU" in
  *aarch64*) export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu ;;
  *arm*) export QEMU_LD_PREFIX=/usr/arm-linux-gnueabihf ;;
esac

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cfg="$dir/gw.toml"
printf '[gateway]\nid = "cpu-bench"\nstate_dir = "%s/state"\n\n' "$dir" >"$cfg"
n=0
for m in "${MONITORS[@]}"; do
  name=${m%%\**}
  count=1; [[ $m == *\** ]] && count=${m##*\*}
  for _ in $(seq 1 "$count"); do
    n=$((n + 1))
    kind=pulse_oximeter; [[ $name == hl7 ]] && kind=bedside_monitor
    "$SIM" simulate serial --profile "$name" --seed "$n" --link "$dir/tty$n" >/dev/null 2>"$dir/sim$n.log" &
    pids+=($!)
    printf '[[device]]\nid = "mon-%d"\nkind = "%s"\n[device.serial]\nport = "%s"\ndriver = "%s"\n\n' \
      "$n" "$kind" "$dir/tty$n" "$name" >>"$cfg"
  done
done
printf '[sink.file]\npath = "%s/delivered.ndjson"\n' "$dir" >>"$cfg"
for i in $(seq 1 "$n"); do
  for _ in $(seq 1 100); do [[ -e $dir/tty$i ]] && break; sleep 0.1; done
  [[ -e $dir/tty$i ]] || { echo "simulator $i did not start: $(cat "$dir/sim$i.log")" >&2; exit 1; }
done

if [[ -n $QEMU ]]; then
  $QEMU "$BIN" run --config "$cfg" >"$dir/gw.log" 2>&1 &
else
  "$BIN" run --config "$cfg" >"$dir/gw.log" 2>&1 &
fi
gw=$!
pids+=("$gw")
cpu() { awk '{ print $14 + $15 }' "/proc/$gw/stat"; }
# Readings (not device events) in the sink's messages so far.
readings() { { grep -o '"type":"[A-Za-z]*"' "$dir/delivered.ndjson" 2>/dev/null || true; } | grep -vc deviceEvent || true; }
sleep "$WARMUP"
kill -0 "$gw" 2>/dev/null || { echo "the gateway exited:" >&2; tail -20 "$dir/gw.log" >&2; exit 1; }
c0=$(cpu); r0=$(readings); t0=$(date +%s.%N)
sleep "$SECONDS_"
kill -0 "$gw" 2>/dev/null || { echo "the gateway exited:" >&2; tail -20 "$dir/gw.log" >&2; exit 1; }
c1=$(cpu); r1=$(readings); t1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
awk -v n="$n" -v c="$((c1 - c0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v r="$((r1 - r0))" -v q="${QEMU:-native}" 'BEGIN {
  s = t1 - t0; cs = c / hz
  printf "%s monitors=%d window=%.1fs cpu=%.2fs core=%.3f%% readings=%d us_per_reading=%s\n",
    q, n, s, cs, 100 * cs / s, r, (r > 0 ? sprintf("%.0f", 1e6 * cs / r) : "-")
}'
[[ $((r1 - r0)) -gt 0 ]] || { echo "no readings were delivered in the window:" >&2; tail -20 "$dir/gw.log" >&2; exit 1; }
