#!/usr/bin/env bash
# make bench: every measurement of bench/README.md in one run on this machine.
# Installs missing packages, builds, installs the extension into the
# PostgreSQL of $PG_CONFIG (default pg_config), then runs bench/measure.sh,
# as the unprivileged user adstream in a copy of the tree when run as root
# (PostgreSQL refuses to run as root).  Results: bench/results/.
#   BENCH_QUICK=1 make bench     small counts, for trying the harness out
#   BENCH_ONLY="raw e2e"         only these parts (raw e2e publish copy alt fresh
#                                scaling variants growth), for working on the harness
#   BENCH_COPY=DIR BENCH_PORT=N  where the copy runs as adstream, and its port
#   BENCH_EVENTS=N BENCH_PARTITIONS=P   other data set sizes
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

export PG_CONFIG=${PG_CONFIG:-pg_config}
BENCH_QUICK=${BENCH_QUICK:-0}
COPY=${BENCH_COPY:-/tmp/adstream-bench}

scripts/deps.sh
make -s PG_CONFIG="$PG_CONFIG" all tools
make -s -C bench
bench/bin/parse_speed --seconds 1 | tee bench/results/parse_speed.md   # the parser per input format (docs/formats.md)
if [ "$(id -u)" -eq 0 ] || [ -w "$("$PG_CONFIG" --pkglibdir)" ]; then
  make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
else
  sudo make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
fi

run_unprivileged "$COPY" env PG_CONFIG="$PG_CONFIG" BENCH_QUICK="$BENCH_QUICK" \
  BENCH_PORT="${BENCH_PORT:-}" BENCH_ONLY="${BENCH_ONLY:-}" \
  BENCH_EVENTS="${BENCH_EVENTS:-}" BENCH_PARTITIONS="${BENCH_PARTITIONS:-}" \
  BENCH_COMMAND="${BENCH_COMMAND:-make bench}" bench/measure.sh
# Dedup memory (issue #12 item 3): ids remembered, bytes per id, rate (docs/performance.md)
PG_CONFIG="$PG_CONFIG" DEDUP_SIZING=1 BENCH_QUICK="$BENCH_QUICK" bench/dedup_capacity.sh
# What an order costs the orders worker, piece by piece (issue #12 item 4)
if [ "$BENCH_QUICK" = 1 ]; then oc_n=30000; oc_repeat=1; else oc_n=300000; oc_repeat=3; fi
PG_CONFIG="$PG_CONFIG" ORDER_COSTS_N=$oc_n ORDER_COSTS_REPEAT=$oc_repeat bench/order_costs.sh

if [ "$(id -u)" -eq 0 ]; then
  # bring the results home from the unprivileged copy
  mkdir -p bench/results
  rm -f bench/results/results.md bench/results/results.csv bench/results/*.png
  cp "$COPY"/bench/results/results.md "$COPY"/bench/results/results.csv "$COPY"/bench/results/*.png bench/results/
  rm -rf bench/results/tmp
  cp -r "$COPY"/bench/results/tmp bench/results/tmp
  echo "bench: results in bench/results (scratch data of the run in $COPY/bench/results/tmp)"
fi
