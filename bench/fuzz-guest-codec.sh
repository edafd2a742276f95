#!/usr/bin/env bash
# Long libFuzzer run of the guest codec (guest/fuzz/codec_fuzz.c; the test target runs a short,
# fixed-seed one). Random seed, value profiling on, the corpus kept in guest/build/fuzz/corpus so
# that successive runs build on each other. Prints executions, time, executions/s, coverage and
# corpus size; a crash leaves guest/build/fuzz/crash-* (make it a vector: guest/fuzz/README.md).
# Usage: bench/fuzz-guest-codec.sh [minutes=10]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-10}
start=$(date +%s)
status=0
FUZZ_LOG=build/fuzz/bench.log guest/fuzz/run.sh -max_total_time=$((minutes * 60)) -use_value_profile=1 >/dev/null || status=$?
elapsed=$(($(date +%s) - start))
log=guest/build/fuzz/bench.log

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
last=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1)
cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\)\/\([^ ]*\).*/cov \1 edges, ft \2 features, corpus \3 inputs (\4)/p' <<<"$last")
crashes=$(find guest/build/fuzz -maxdepth 1 \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)

echo "guest codec fuzz: ${runs:-?} executions in ${elapsed} s (${rate:-?} exec/s), peak RSS ${rss:-?} MiB"
echo "  ${cov:-coverage not reported}"
echo "  artifacts (crash/timeout/oom) in guest/build/fuzz: $crashes"
# Line coverage of src/codec.c over the whole corpus, where llvm-cov is installed (Debian: llvm).
if command -v llvm-profdata >/dev/null && command -v llvm-cov >/dev/null; then
  cov_bin=guest/build/codec_fuzz_cov
  (cd guest && "${CLANG:-clang}" -g -O0 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping \
    -Isrc -o build/codec_fuzz_cov fuzz/codec_fuzz.c src/codec.c)
  LLVM_PROFILE_FILE=guest/build/fuzz/cov.profraw "$cov_bin" -runs=0 guest/build/fuzz/corpus guest/build/fuzz/seeds >/dev/null 2>&1
  llvm-profdata merge -sparse guest/build/fuzz/cov.profraw -o guest/build/fuzz/cov.profdata
  llvm-cov report "$cov_bin" -instr-profile=guest/build/fuzz/cov.profdata guest/src/codec.c |
    awk '$1 ~ /codec\.c$/ { print "  src/codec.c over the corpus: lines " $(NF-3) ", functions " $(NF-6) ", branches " $NF }'
  echo "  (uncovered: llvm-cov show $cov_bin -instr-profile=guest/build/fuzz/cov.profdata guest/src/codec.c)"
fi
if [[ $status -ne 0 ]]; then
  echo "  FAILED: see guest/$log" >&2
  exit 1
fi
