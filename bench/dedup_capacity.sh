#!/usr/bin/env bash
# Dedup capacity (issue #12, item 3): how many event ids the dedup index
# remembers, at what shared memory per id, and at what ingestion rate.
#
# Run from the top of a built tree (make all tools) whose extension is
# installed into $PG_CONFIG's PostgreSQL, as an ordinary user (as root it
# reruns itself as user adstream in a copy under /tmp/adstream-dedup-bench).
#
#   bench/dedup_capacity.sh                      7 rounds of 1.6 M events: about 10.5 M distinct ids
#   BENCH_QUICK=1 bench/dedup_capacity.sh        3 rounds of 200 k events
#   DEDUP_LABEL=0.5 DEDUP_CONF="adstream.dedup_index_size = 12000000" bench/dedup_capacity.sh
#                                                the same with other settings (e.g. another build)
#   DEDUP_APPEND=1 ...                           keep the rows of earlier runs (compare labels)
#   DEDUP_SIZING=1 ...                           also start a server sized for 1 h at 100 k/s
#                                                and one with the defaults, and report their memory
#
# Each round produces a fresh stream (its own mock broker, 128 partitions,
# 5% duplicates) and a new source consumes it with 2 workers from the
# beginning; the round's rate is its events over the time from
# create_source until its offsets cover them, and its counts are checked
# against the loadgen's truth.  Sources are paused, not dropped, so every id
# stays remembered: after the last round the index holds every round's ids.
# The server's CPU time per event (the postmaster's process tree, from
# /proc) is less sensitive to other load on a shared machine than the rate.
# Then the server restarts and the index is rebuilt from dedup_log (timed).
#
# Results: a row per measurement in bench/results/dedup_capacity.csv (label,
# what, value; DEDUP_APPEND=1 adds to the rows already there, to compare
# labels) and the same on stderr.  The machine may be shared:
# the figures are indicative; compare labels run back to back.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  . scripts/common.sh
  COPY=/tmp/adstream-dedup-bench
  run_unprivileged "$COPY" env PG_CONFIG="${PG_CONFIG:-pg_config}" BENCH_QUICK="${BENCH_QUICK:-0}" \
    DEDUP_LABEL="${DEDUP_LABEL:-}" DEDUP_CONF="${DEDUP_CONF:-}" DEDUP_SIZING="${DEDUP_SIZING:-0}" \
    DEDUP_ROUNDS="${DEDUP_ROUNDS:-}" DEDUP_EVENTS="${DEDUP_EVENTS:-}" DEDUP_APPEND=0 bench/dedup_capacity.sh
  mkdir -p bench/results
  if [ "${DEDUP_APPEND:-0}" = 1 ] && [ -f bench/results/dedup_capacity.csv ]; then
    tail -n +2 "$COPY"/bench/results/dedup_capacity.csv >>bench/results/dedup_capacity.csv
  else
    cp "$COPY"/bench/results/dedup_capacity.csv bench/results/dedup_capacity.csv
  fi
  exit 0
fi

PG_CONFIG=${PG_CONFIG:-pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
QUICK=${BENCH_QUICK:-0}
LABEL=${DEDUP_LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo tree)}
TOP=$PWD
BIN=$TOP/test/bin
OUT=$TOP/bench/results
TMP=$OUT/tmp-dedup
PORT=${BENCH_PORT:-54341}
PARTITIONS=128                  # the mock keeps at most 5 MiB of each partition
if [ "$QUICK" = 1 ]; then ROUNDS=${DEDUP_ROUNDS:-3}; EVENTS=${DEDUP_EVENTS:-200000}
else ROUNDS=${DEDUP_ROUNDS:-7}; EVENTS=${DEDUP_EVENTS:-1600000}; fi
CAPACITY=$(( ROUNDS * EVENTS * 11 / 10 ))
CSV=$OUT/dedup_capacity.csv

rm -rf "$TMP"
mkdir -p "$TMP"
[ "${DEDUP_APPEND:-0}" = 1 ] && [ -f "$CSV" ] || echo "label,what,value" >"$CSV"
CONN="host=$TMP port=$PORT dbname=postgres"
log() { printf '%s  %s\n' "$(date +%T)" "$*" | tee -a "$TMP/bench.log" >&2; }
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -d postgres "$@"; }
q() { psql_ -At -c "$1"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
record() { local v=$2; [[ $v == *,* ]] && v="\"$v\""; echo "$LABEL,$1,$v" >>"$CSV"; log "$LABEL: $1 = $2"; }
BROKER_PID=
cleanup() {
  "$PGBIN/pg_ctl" -D "$TMP/pg" -m immediate -w stop >/dev/null 2>&1 || true
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT
wait_sql() {   # SQL TIMEOUT_S
  local deadline=$(( $(date +%s) + $2 ))
  while [ "$(q "$1")" != t ]; do
    [ "$(date +%s)" -ge "$deadline" ] && { log "timed out waiting for: $1"; return 1; }
    sleep 0.1
  done
}

start_server() {   # DIR [conf lines...]
  local dir=$1; shift
  rm -rf "$dir"
  "$PGBIN/initdb" -D "$dir" -A trust -U "$(id -un)" >/dev/null
  cat >>"$dir/postgresql.conf" <<EOC
port = $PORT
listen_addresses = ''
unix_socket_directories = '$TMP'
shared_preload_libraries = 'adstream'
adstream.database = 'postgres'
adstream.auto_maintenance = off
max_worker_processes = 40
adstream.max_workers = 32
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOC
  [ $# -gt 0 ] && printf '%s\n' "$@" >>"$dir/postgresql.conf"
  "$PGBIN/pg_ctl" -D "$dir" -l "$dir.log" -w start >/dev/null
  psql_ -c "CREATE EXTENSION adstream"
}

# ---------------------------------------------------------------- sizing
if [ "${DEDUP_SIZING:-0}" = 1 ]; then
  # 1 h horizon at 100 k events/s: ids live for the horizon plus up to an
  # hour (expiry gives up whole hours) plus the retention interval (5 min):
  # 100,000 x 7,500 s = 750 M ids.
  for conf in "defaults|" "100k_per_s_1h|adstream.dedup_index_size = 750000000"; do
    name=${conf%%|*}; line=${conf#*|}
    start_server "$TMP/size" ${line:+"$line"}
    IFS='|' read -r cap bytes <<<"$(q "SELECT capacity, shared_memory_bytes FROM adstream.dedup_index_status()")"
    record "sizing_${name}_capacity_ids" "$cap"
    record "sizing_${name}_shared_memory_bytes" "$bytes"
    record "sizing_${name}_bytes_per_id_at_capacity" "$(awk -v b="$bytes" -v c="$cap" 'BEGIN { printf "%.2f", b / c }')"
    "$PGBIN/pg_ctl" -D "$TMP/size" -m fast -w stop >/dev/null
    rm -rf "$TMP/size"
  done
fi

# ---------------------------------------------------------------- rounds
log "dedup capacity ($LABEL): $ROUNDS rounds of $EVENTS events, dedup_index_size $CAPACITY"
start_server "$TMP/pg" "adstream.dedup_index_size = $CAPACITY" "adstream.dedup_hot_size = 250000" ${DEDUP_CONF:+"$DEDUP_CONF"}
record shared_memory_bytes "$(q "SELECT shared_memory_bytes FROM adstream.dedup_index_status()")"
NOW=$(now_ms)
total_s=0; total_events=0
for r in $(seq 1 "$ROUNDS"); do
  "$BIN/adstream-mock-broker" --no-stdin --topic "ads:$PARTITIONS" >"$TMP/broker$r.out" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do grep -qs BOOTSTRAP "$TMP/broker$r.out" && break; sleep 0.1; done
  BOOT=$(awk '/^BOOTSTRAP/ {print $2}' "$TMP/broker$r.out")
  out=$("$BIN/adstream-loadgen" --brokers "$BOOT" --topic ads --partitions $PARTITIONS --count "$EVENTS" \
        --seed $((1000 + r)) --dup-ratio 0.05 --late-ratio 0 --now-ms "$NOW" --start-ms $((NOW - 1800000)) \
        --truth "$TMP/truth$r.csv" 2>>"$TMP/loadgen.err")
  sent=$(sed -n 's/.*\bsent=\([0-9]*\).*/\1/p' <<<"$out")
  cpu0=$(bench/proc_stats.pl tree "$(head -1 "$TMP/pg/postmaster.pid")")
  t0=$(now_ms)
  q "SELECT adstream.create_source('r$r', '$BOOT', 'ads', options => '{\"workers\": 2, \"fetch.wait.max.ms\": \"10\"}')" >/dev/null
  wait_sql "SELECT coalesce(sum(next_offset), 0) >= $sent FROM adstream.offsets WHERE source = 'r$r'" 1800
  t1=$(now_ms)
  cpu1=$(bench/proc_stats.pl tree "$(head -1 "$TMP/pg/postmaster.pid")")
  rate=$(awk -v n="$sent" -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
  check=$(psql_ -At <<EOSQL
CREATE TEMP TABLE truth_raw (line text);
\\copy truth_raw FROM '$TMP/truth$r.csv'
CREATE TEMP VIEW truth_min AS
  SELECT split_part(line, ',', 2)::bigint AS ad_id, to_timestamp(split_part(line, ',', 4)::bigint) AS window_start,
         sum(split_part(line, ',', 5)::bigint) AS impressions, sum(split_part(line, ',', 6)::bigint) AS clicks
    FROM truth_raw WHERE line LIKE 'minute,%' GROUP BY 1, 2;
CREATE TEMP VIEW got_min AS
  SELECT ad_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks FROM adstream.ad_stats_minute
   WHERE source_id = (SELECT id FROM adstream.sources WHERE name = 'r$r') GROUP BY 1, 2;
SELECT CASE WHEN (SELECT count(*) FROM ((TABLE truth_min EXCEPT TABLE got_min) UNION ALL (TABLE got_min EXCEPT TABLE truth_min)) d) = 0
             AND (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,unique,%')
               = (SELECT sum(accepted) FROM adstream.offsets WHERE source = 'r$r')
            THEN 'EXACT' ELSE 'MISMATCH' END;
EOSQL
)
  q "SELECT adstream.pause_source('r$r')" >/dev/null
  kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=
  entries=$(q "SELECT entries FROM adstream.dedup_index_status()")
  record "round${r}_events_per_s" "$rate"
  record "round${r}_server_cpu_us_per_event" "$(awk -v a="$cpu0" -v b="$cpu1" -v n="$sent" 'BEGIN { printf "%.2f", (b - a) * 1e6 / n }')"
  record "round${r}_check" "$check"
  [ "$check" = EXACT ] || inexact=$((${inexact:-0} + 1))
  record "round${r}_entries_after" "$entries"
  total_s=$((total_s + t1 - t0)); total_events=$((total_events + sent))
  total_cpu=$(awk -v t="${total_cpu:-0}" -v a="$cpu0" -v b="$cpu1" 'BEGIN { print t + b - a }')
done
record server_cpu_us_per_event_all_rounds "$(awk -v c="$total_cpu" -v n="$total_events" 'BEGIN { printf "%.2f", c * 1e6 / n }')"
record events_per_s_all_rounds "$(awk -v n="$total_events" -v ms="$total_s" 'BEGIN { printf "%.0f", n * 1000 / ms }')"
IFS='|' read -r entries bytes <<<"$(q "SELECT entries, shared_memory_bytes FROM adstream.dedup_index_status()")"
record ids_remembered "$entries"
record ids_in_dedup_log "$(q "SELECT sum(length(ids) / 16) FROM adstream.dedup_log")"
record shared_memory_bytes_per_remembered_id "$(awk -v b="$bytes" -v c="$entries" 'BEGIN { printf "%.2f", b / c }')"
if [ "$(q "SELECT count(*) FROM pg_proc WHERE proname = 'dedup_index_status' AND 'disk_lookups' = ANY (proargnames)")" = 1 ]; then
  record tiers "$(q "SELECT format('hot %s, filter %s, segments %s, disk lookups %s (duplicates found %s) in %s ms', hot_entries, filter_entries, segments, disk_lookups, disk_duplicates, disk_lookup_ms) FROM adstream.dedup_index_status()")"
fi

# ---------------------------------------------------------------- rebuild
"$PGBIN/pg_ctl" -D "$TMP/pg" -m fast -w restart -l "$TMP/pg.log" >/dev/null
t0=$(now_ms)
q "SELECT adstream.resume_source('r1')" >/dev/null    # its worker rebuilds the index first
wait_sql "SELECT ready FROM adstream.dedup_index_status()" 1800
t1=$(now_ms)
record rebuild_ms_until_ready "$((t1 - t0))"
record rebuilt_ids "$(q "SELECT entries FROM adstream.dedup_index_status()")"
grep -h "dedup index rebuilt" "$TMP/pg.log" | tail -1 | sed 's/.*LOG: *//' >&2 || true
log "done: results in $CSV"
if [ "${inexact:-0}" -gt 0 ]; then
  log "FAILED: $inexact round(s) did not match the ground truth"
  exit 1
fi
