#!/usr/bin/env bash
# test/fuzz/run.sh [SECONDS]
#
# Builds the libFuzzer harnesses for src/event_parse.c (clang, into a
# temporary directory), replays every regression input in test/fuzz/crashers/,
# then fuzzes each harness for SECONDS seconds (default 20) on a copy of its
# seed corpus, so that nothing new is written into the repository.
#
# Harnesses: event and order (the two contracts), mapped (the event contract
# under a field mapping, with a differential against the default parser) and
# avro (the Confluent wire format through src/avro_format.c; needs libavro).
#
# Regression inputs: test/fuzz/crashers/<harness>/* are replayed against their
# own harness, files directly in test/fuzz/crashers/ against event, order and
# mapped (they are JSON).
#
# Needs clang with the libFuzzer runtime (Debian 12: clang, libclang-rt-14-dev).
# Exits non-zero on any crash; the last line is "fuzz: N passed, N failed".
set -uo pipefail

SECS="${1:-20}"
case "$SECS" in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FUZZ="$ROOT/test/fuzz"
HARNESSES=(event order mapped avro)

# --- compiler -----------------------------------------------------------
CC_FUZZ="${CLANG:-}"
if [ -z "$CC_FUZZ" ]; then
  for c in clang clang-14; do
    if command -v "$c" >/dev/null 2>&1; then CC_FUZZ="$c"; break; fi
  done
fi
if [ -z "$CC_FUZZ" ]; then
  echo "fuzz: clang not found (Debian: apt-get install clang libclang-rt-14-dev)"
  echo "fuzz: 0 passed, 0 failed"
  exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/adstream-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

CFLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -fno-omit-frame-pointer -std=c99 -Wall -Wextra -I"$ROOT/include")

# Probe: can this clang link a libFuzzer target at all?
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void) d; (void) n; return 0; }\n' \
  > "$WORK/probe.c"
if ! "$CC_FUZZ" -fsanitize=fuzzer,address,undefined "$WORK/probe.c" -o "$WORK/probe" \
     >"$WORK/probe.log" 2>&1; then
  echo "fuzz: $CC_FUZZ cannot build libFuzzer targets (Debian: apt-get install clang libclang-rt-14-dev):"
  sed 's/^/  /' "$WORK/probe.log" | head -n 5
  echo "fuzz: 0 passed, 0 failed"
  exit 1
fi

passed=0
failed=0

for h in "${HARNESSES[@]}"; do
  echo "fuzz: building fuzz_$h"
  extra=()
  [ "$h" = avro ] && extra=("$ROOT/src/avro_format.c" -lavro)
  if ! "$CC_FUZZ" "${CFLAGS[@]}" "$FUZZ/fuzz_$h.c" "$ROOT/src/event_parse.c" "${extra[@]}" \
       -o "$WORK/fuzz_$h" >"$WORK/build_$h.log" 2>&1; then
    echo "fuzz: build of fuzz_$h failed:"
    sed 's/^/  /' "$WORK/build_$h.log"
    echo "fuzz: $passed passed, $((failed + 1)) failed"
    exit 1
  fi
done

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

# --- regression inputs ----------------------------------------------------
for h in "${HARNESSES[@]}"; do
  inputs=()
  shared=("$FUZZ"/crashers/*)
  [ "$h" = avro ] && shared=()
  for f in "${shared[@]}" "$FUZZ"/crashers/"$h"/*; do
    [ -f "$f" ] && inputs+=("$f")
  done
  [ ${#inputs[@]} -eq 0 ] && continue
  log="$WORK/regress_$h.log"
  if "$WORK/fuzz_$h" -runs=1 "${inputs[@]}" >"$log" 2>&1; then
    echo "fuzz: regression fuzz_$h: ${#inputs[@]} input(s) ok"
    passed=$((passed + 1))
  else
    echo "fuzz: regression fuzz_$h FAILED:"
    tail -n 40 "$log" | sed 's/^/  /'
    failed=$((failed + 1))
  fi
done

# --- fuzzing ----------------------------------------------------------------
for h in "${HARNESSES[@]}"; do
  corpus="$WORK/corpus_$h"
  mkdir -p "$corpus" "$WORK/artifacts"
  if [ -d "$FUZZ/corpus/$h" ]; then
    cp -p "$FUZZ/corpus/$h"/. "$corpus"/ -R
  fi
  log="$WORK/fuzz_$h.log"
  echo "fuzz: running fuzz_$h for ${SECS}s"
  "$WORK/fuzz_$h" -max_len=4096 -max_total_time="$SECS" -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$h-" \
      "$corpus" >"$log" 2>&1
  rc=$?
  stats="$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1)"
  execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
  eps="$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')"
  if [ $rc -eq 0 ] && ! grep -qE 'ERROR: (libFuzzer|AddressSanitizer|UndefinedBehaviorSanitizer)|runtime error:' "$log"; then
    echo "fuzz: fuzz_$h ok: ${execs:-?} execs, ${eps:-?} exec/s; $stats"
    passed=$((passed + 1))
  else
    echo "fuzz: fuzz_$h FAILED (exit $rc):"
    grep -vE '^#[0-9]+[[:space:]]' "$log" | tail -n 60 | sed 's/^/  /'
    for a in "$WORK/artifacts/$h-"*; do
      [ -f "$a" ] || continue
      mkdir -p "$FUZZ/crashers/$h"
      dest="$FUZZ/crashers/$h/$(basename "$a")"
      cp "$a" "$dest"
      echo "  crashing input saved as ${dest#"$ROOT"/} ($(wc -c <"$a") bytes)"
    done
    failed=$((failed + 1))
  fi
done

echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
