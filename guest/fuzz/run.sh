#!/usr/bin/env bash
# Builds and runs the libFuzzer harness of the guest codec (fuzz/codec_fuzz.c), from guest/.
#   fuzz/run.sh [libFuzzer flags...]     e.g. fuzz/run.sh -runs=200000 -max_total_time=20 -seed=1   (the test's short run)
#                                              fuzz/run.sh -max_total_time=600      (bench/fuzz-guest-codec.sh)
# Seeds: every protocol/vectors/*.hex (and all valid ones in one stream), each behind the harness's
# control byte. New inputs go to build/fuzz/corpus (kept between runs), crashes to
# build/fuzz/crash-* (turn each into a vector: see guest/fuzz/README.md). Prints libFuzzer's
# figures, then "1 passed, 0 failed" or "0 passed, 1 failed" for the test target's total.
set -euo pipefail
cd "$(dirname "$0")/.."

CLANG=${CLANG:-clang}
VECTORS=${VECTORS:-../protocol/vectors}
OUT=build/fuzz
BIN=build/codec_fuzz
FLAGS=(-g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc)

if ! command -v "$CLANG" >/dev/null 2>&1 ||
   ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; (void)n; return 0; }' |
     "$CLANG" -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
  echo "fuzz: $CLANG cannot build a libFuzzer target; install the Debian packages clang and libclang-rt-dev (scripts/setup.sh)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

mkdir -p "$OUT/seeds" "$OUT/corpus"
if [[ ! -x $BIN || fuzz/codec_fuzz.c -nt $BIN || src/codec.c -nt $BIN || src/codec.h -nt $BIN ]]; then
  "$CLANG" "${FLAGS[@]}" -o "$BIN" fuzz/codec_fuzz.c src/codec.c
fi

# A vector's bytes: hex with whitespace and '#' comments (docs/protocol.md, "Test vectors").
hex_bytes() { perl -ne 's/#.*//; s/\s+//g; print pack("H*", $_)' "$1"; }
rm -f "$OUT"/seeds/*
all=()
for hex in "$VECTORS"/*.hex; do
  name=$(basename "$hex" .hex)
  { printf '\x01'; hex_bytes "$hex"; } >"$OUT/seeds/$name"
  grep -q '^error ' "${hex%.hex}.txt" || all+=("$hex")
done
{ printf '\x2a'; for hex in "${all[@]}"; do hex_bytes "$hex"; done; } >"$OUT/seeds/all-valid-stream"

log=${FUZZ_LOG:-$OUT/last.log}
status=0
"$BIN" "$OUT/corpus" "$OUT/seeds" -artifact_prefix="$OUT/" -dict=fuzz/codec.dict -max_len=8192 -timeout=10 -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?
# The figures: libFuzzer's last status line and its final stats.
grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)|^Done [0-9]+ runs|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tail -n 6 || true
if [[ $status -ne 0 ]]; then
  grep -E 'ERROR|codec_fuzz:|SUMMARY|Test unit written|artifact_prefix' "$log" | head -n 20 >&2 || true
  echo "fuzz: FAILED (exit $status); full log in guest/$log" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
echo "1 passed, 0 failed"
