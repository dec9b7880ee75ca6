#!/usr/bin/env bash
# Coverage-guided fuzzing of the serial drivers and the profile engine with
# cargo-afl (AFL++ on the stable toolchain; no nightly needed).
#
# Usage: scripts/fuzz.sh [--execs N] [--time SECONDS] [--resume] [TARGET...]
#        scripts/fuzz.sh --list | --help
#
#   TARGET     one or more of the targets in fuzz/fuzz_targets (default: all):
#              line_framer mllp_framer masimo_ascii1 nonin_ascii nellcor_n595
#              hl7 hl7_message nonin_df2 nonin_df7 nonin_df8 profile_toml
#   --execs N  stop each target after about N executions (default 1000000)
#   --time S   and after at most S seconds (default 1800)
#   --resume   go on from the target's last run in fuzz/out/TARGET (its queue
#              and counters: AFL++ restores execs_done, so N counts the
#              executions of every run together) instead of starting afresh
#
# Each target runs one AFL++ instance from the seeds in fuzz/seeds/TARGET into
# fuzz/out/TARGET (ignored by git; the previous run's folder is kept as
# fuzz/out/TARGET.prev). At the end one line per target
# goes to standard output and to fuzz/out/summary.tsv:
#     target  execs  execs_per_sec  run_time_s  corpus  crashes  hangs  edges
# Crashing inputs are in fuzz/out/TARGET/default/crashes/; reproduce one with
#     fuzz/target/release/TARGET < FILE
# (the binary reads one input from standard input when not under afl-fuzz).
# Exit status 1 if any target found a crash or a hang.
#
# What it installs when missing: cargo-afl from crates.io (`cargo install
# cargo-afl`) and its AFL++ build (`cargo afl config --build`, compiled from
# the source the crate ships, with the system C compiler). The fuzz crate in
# fuzz/ is its own workspace, so the gateway's build never compiles it.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(line_framer mllp_framer masimo_ascii1 nonin_ascii nellcor_n595 hl7 hl7_message nonin_df2 nonin_df7 nonin_df8 profile_toml)
EXECS=1000000
TIME=1800
RESUME=0
TARGETS=()
while (($#)); do
  case "$1" in
    --execs) EXECS=$2; shift 2 ;;
    --time) TIME=$2; shift 2 ;;
    --resume) RESUME=1; shift ;;
    --list) printf '%s\n' "${ALL[@]}"; exit 0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *)
      [[ " ${ALL[*]} " == *" $1 "* ]] || { echo "fuzz.sh: no target '$1' (scripts/fuzz.sh --list)" >&2; exit 2; }
      TARGETS+=("$1"); shift ;;
  esac
done
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")

AFL_VERSION=0.18.2
if ! cargo afl --version >/dev/null 2>&1; then
  echo "==> installing cargo-afl $AFL_VERSION" >&2
  cargo install cargo-afl --version "$AFL_VERSION" --locked >&2
fi
# `cargo afl config --build` compiles AFL++ once per cargo-afl version
# (under ~/.local/share/afl.rs); later calls find it and return at once.
afl_help=$(cargo afl fuzz -h 2>&1 || true)
if [[ $afl_help != *"-E execs"* ]]; then
  echo "==> building AFL++ for cargo-afl" >&2
  cargo afl config --build >&2
fi

echo "==> building the fuzz targets (instrumented, overflow checks on)" >&2
(cd fuzz && cargo afl build --release >&2)

# No core-dump helper, CPU governor or free core is needed for a measured run
# on a shared machine; AFL++ would otherwise refuse to start.
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1
mkdir -p fuzz/out
summary=fuzz/out/summary.tsv
[[ -f $summary ]] || printf 'target\texecs\texecs_per_sec\trun_time_s\tcorpus\tcrashes\thangs\tedges\n' >"$summary"
printf 'target\texecs\texecs_per_sec\trun_time_s\tcorpus\tcrashes\thangs\tedges\n'
bad=0
for t in "${TARGETS[@]}"; do
  out="fuzz/out/$t"
  input=("fuzz/seeds/$t")
  if ((RESUME)) && [[ -f $out/default/fuzzer_stats ]]; then
    input=(-)
    echo "==> $t: resuming $out ($(awk -F' *: *' '$1 == "execs_done" { print $2 }' "$out/default/fuzzer_stats") executions so far)" >&2
  elif [[ -d $out ]]; then
    rm -rf "$out.prev"
    mv "$out" "$out.prev"
  fi
  echo "==> $t: up to $EXECS executions or $TIME s" >&2
  cargo afl fuzz -i "${input[@]}" -o "$out" -E "$EXECS" -V "$TIME" "fuzz/target/release/$t" >"$out.log" 2>&1 || {
    echo "afl-fuzz failed for $t; the end of $out.log:" >&2
    tail -20 "$out.log" >&2
    bad=1
    continue
  }
  stats="$out/default/fuzzer_stats"
  get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
  line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$t" "$(get execs_done)" "$(get execs_per_sec)" "$(get run_time)" \
    "$(get corpus_count)" "$(get saved_crashes)" "$(get saved_hangs)" "$(get edges_found)")
  echo "$line" | tee -a "$summary"
  if [[ $(get saved_crashes) != 0 || $(get saved_hangs) != 0 ]]; then
    echo "$t: crashes or hangs in $out/default/{crashes,hangs}/" >&2
    bad=1
  fi
done
exit $bad
