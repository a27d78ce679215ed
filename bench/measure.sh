#!/usr/bin/env bash
# The measurements of `make bench`, run as an ordinary user from the top of a
# built tree whose extension is installed into $PG_CONFIG's PostgreSQL (see
# bench/run.sh, which prepares all that).  Writes bench/results/results.csv,
# results.md and the plots; scratch data goes to bench/results/tmp.
#
# BENCH_QUICK=1 uses small counts (about 2 minutes instead of about 10).
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
QUICK=${BENCH_QUICK:-0}
TOP=$PWD
BIN=$TOP/test/bin
BBIN=$TOP/bench/bin
OUT=$TOP/bench/results
TMP=$OUT/tmp
PORT=${BENCH_PORT:-54331}
[ -n "$PORT" ] || PORT=54331
# BENCH_ONLY="raw e2e ...": run only these parts (for working on the harness;
# a results.md from such a run says so).  Freshness needs e2e's rate.
ONLY=${BENCH_ONLY:-}
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
WORKERS=2                       # the reference configuration; scaling tries 1, 2, 4

# The mock broker keeps at most 5 MiB (and 100,000 message sets) per
# partition: 3 M events of about 200 bytes need 128 partitions or more.
if [ "$QUICK" = 1 ]; then
  EVENTS=100000; PARTITIONS=64; ORDER_PARTITIONS=8; FRESH_S=6; GROW_ROUNDS=4; GROW_EVENTS=25000; MODE=quick
else
  EVENTS=3000000; PARTITIONS=192; ORDER_PARTITIONS=32; FRESH_S=10; GROW_ROUNDS=5; GROW_EVENTS=400000; MODE=full
fi
EVENTS=${BENCH_EVENTS:-$EVENTS}
PARTITIONS=${BENCH_PARTITIONS:-$PARTITIONS}
# the per-event alternative is slow (about 10,000 events/s): it reads a
# smaller data set of the same kind
ALT_EVENTS=$(( EVENTS / 10 ))
ORDERS=$((EVENTS / 10))
LG_COMMON=(--users 20000 --stores 200 --click-ratio 0.1 --bad-ratio 0.01 --late-ratio 0.002 --future-ratio 0.001)
# The data sets are produced as a high-volume producer does: each
# partition's records handed to librdkafka 1,000 at a time and lingered on,
# so that the broker holds message sets of about 1,000 records.  librdkafka's
# mock broker answers a fetch with at most one message set per partition, so
# with the round robin's message sets of a few dozen records the broker,
# not the consumer, would set the pace (bench/README.md, "The ceiling").
LG_BATCH=(--batch 1000 --linger-ms 10)

rm -rf "$TMP" "$OUT"/*.png "$OUT"/results.md "$OUT"/results.csv
mkdir -p "$TMP"
CSV=$OUT/results.csv
CONN="host=$TMP port=$PORT dbname=postgres"
BENCH_T0=$(date +%s)

log() { printf '%s  %s\n' "$(date +%T)" "$*" | tee -a "$TMP/bench.log" >&2; }
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -d postgres "$@"; }
q() { psql_ -At -c "$1"; }
now_us() { echo $(( $(date +%s%N) / 1000 )); }
# key=value from a summary line
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2" | head -1; }

cleanup() {
  "$PGBIN/pg_ctl" -D "$TMP/pg" -m immediate -w stop >/dev/null 2>&1 || true
  exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- 10>&- 11>&- 12>&- 2>/dev/null || true
  [ -n "${BROKER_PID:-}" ] && kill "$BROKER_PID" 2>/dev/null
  [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT

# ---------------------------------------------------------------- brokers
# One broker per data set, and one that stands for Pinot's Kafka.  The mock
# broker serves fetches more slowly the more it holds (the raw consumer read
# the base topic at 0.5-0.6 M/s from a broker that also held two more data
# sets, at 1.2-1.5 M/s from one that held only it), so that sharing one
# would lower the ceiling and every consumer with it.
start_broker() {   # NAME FD TOPIC...: sets BOOT_NAME and PID_NAME (not in a subshell: it holds the fd)
  local name=$1 fd=$2; shift 2
  local args=() t
  for t in "$@"; do args+=(--topic "$t"); done
  mkfifo "$TMP/$name.ctl"
  "$BIN/adstream-mock-broker" "${args[@]}" <"$TMP/$name.ctl" >"$TMP/$name.out" 2>&1 &
  eval "PID_$name=$!"
  eval "exec $fd>\"$TMP/$name.ctl\""   # the broker lives as long as this descriptor
  for _ in $(seq 100); do grep -q BOOTSTRAP "$TMP/$name.out" && break; sleep 0.1; done
  eval "BOOT_$name=$(awk '/^BOOTSTRAP/ {print $2}' "$TMP/$name.out")"
}
log "bench ($MODE): $EVENTS events, $PARTITIONS partitions, results in $OUT"
start_broker broker 3 ads:$PARTITIONS orders:$ORDER_PARTITIONS
start_broker b_ads100k 5 ads100k:$PARTITIONS
start_broker b_dup0 6 dup0:$PARTITIONS
start_broker b_small 10 small:$PARTITIONS
# The freshness topics have 64 partitions: a real-time producer's message
# sets are small, and the mock broker walks a partition's message sets on
# every fetch, so on two shared cores more partitions cost the broker more
# than the measurement can afford.
FRESH_PARTITIONS=64
start_broker b_fresh 7 fresh:$FRESH_PARTITIONS
start_broker b_fresh2 9 fresh2:$FRESH_PARTITIONS
start_broker b_grow 8 grow:$PARTITIONS
# Attribution in real time, held and not (a broker each: topics are read from the start)
start_broker b_rt1 11 rt1:$FRESH_PARTITIONS rt1o:16
start_broker b_rt2 12 rt2:$FRESH_PARTITIONS rt2o:16
start_broker sink 4 adstream.ad_stats:4 adstream.attributed_orders:2
BROKERS=$BOOT_broker BROKER_PID=$PID_broker SINK=$BOOT_sink SINK_PID=$PID_sink
[ -n "$BROKERS" ] && [ -n "$SINK" ] && [ -n "$BOOT_b_ads100k" ] && [ -n "$BOOT_b_dup0" ] && [ -n "$BOOT_b_fresh" ] && [ -n "$BOOT_b_fresh2" ] && [ -n "$BOOT_b_small" ] \
  && [ -n "$BOOT_b_grow" ] && [ -n "$BOOT_b_rt1" ] && [ -n "$BOOT_b_rt2" ] || { log "a mock broker did not start"; exit 1; }
broker_of() {   # TOPIC: the bootstrap address of the broker that holds it
  case $1 in ads|orders) echo "$BROKERS" ;; *) eval "echo \$BOOT_b_$1" ;; esac
}

# ---------------------------------------------------------------- data sets
# produce NAME TOPIC ARGS...: sets SENT_<NAME> and writes $TMP/truth-NAME.csv
# Every consumer (adstream's sources, the raw and the alternative consumers)
# sets fetch.wait.max.ms = 10.  librdkafka's mock broker does not answer a
# waiting fetch when data arrives, as Kafka does, but only when the wait
# (500 ms by default) runs out; on Kafka the setting would change nothing.
KAFKA_OPTS=', "fetch.wait.max.ms": "10"'

produce() {
  local name=$1 topic=$2; shift 2
  local out
  out=$("$BIN/adstream-loadgen" --brokers "$(broker_of "$topic")" --topic "$topic" --partitions $PARTITIONS \
        --truth "$TMP/truth-$name.csv" "${LG_COMMON[@]}" "${LG_BATCH[@]}" "$@" 2>>"$TMP/loadgen.err")
  echo "$out" >"$TMP/loadgen-$name.out"
  eval "SENT_$name=$(kv sent "$out")"
  eval "ORDERS_SENT_$name=$(kv orders_sent "$out"); : \${ORDERS_SENT_$name:=0}"
}
log "producing the data sets once (seeded): base (1k ads, 10% duplicates, with orders), 100k ads, 0% duplicates"
produce base ads --count $EVENTS --seed 11 --ads 1000 --dup-ratio 0.10 --orders-topic orders --orders $ORDERS
SENT_ads100k=0; SENT_dup0=0; SENT_small=0
want alt && produce small small --count $ALT_EVENTS --seed 12 --ads 1000 --dup-ratio 0.10
want variants && produce ads100k ads100k --count $EVENTS --seed 11 --ads 100000 --dup-ratio 0.10
want variants && produce dup0 dup0 --count $EVENTS --seed 11 --ads 1000 --dup-ratio 0
# a data set the broker trimmed would not match its truth: stop here
if grep -q "keeps only the newest" "$TMP/loadgen.err"; then
  log "a data set does not fit the mock broker (5 MiB per partition): $(grep "keeps only" "$TMP/loadgen.err" | head -1)"
  exit 1
fi
log "sent: base $SENT_base (+ $ORDERS_SENT_base orders), ads100k $SENT_ads100k, dup0 $SENT_dup0, small (for the per-event alternative) $SENT_small"
SETS_base=$(kv message_sets "$(cat "$TMP/loadgen-base.out")")
PER_SET_base=$(kv records_per_set "$(cat "$TMP/loadgen-base.out")")
log "base data set: $SETS_base message sets of $PER_SET_base records on average"

# ---------------------------------------------------------------- PostgreSQL
# Every measurement starts from a copy of one template cluster with the
# extension created, so each one finds the same empty database.
"$PGBIN/initdb" -D "$TMP/template" -A trust -U "$(id -un)" >/dev/null
cat >>"$TMP/template/postgresql.conf" <<EOC
port = $PORT
listen_addresses = ''
unix_socket_directories = '$TMP'
shared_preload_libraries = 'adstream'
adstream.database = 'postgres'
max_worker_processes = 16
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
# The data sets' "old" events lie 61 minutes behind their partitions (the
# loadgen's --horizon-s 3600), and the truth counts them: expiry, which
# maintenance may run during a measurement, must not reach them.
adstream.dedup_horizon = '6h'
EOC
"$PGBIN/pg_ctl" -D "$TMP/template" -l "$TMP/template.log" -w start >/dev/null
psql_ -c "CREATE EXTENSION adstream"
PG_VERSION=$(q "SHOW server_version")
"$PGBIN/pg_ctl" -D "$TMP/template" -m fast -w stop >/dev/null

fresh_cluster() {   # [postgresql.conf lines]
  "$PGBIN/pg_ctl" -D "$TMP/pg" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$TMP/pg"
  cp -a "$TMP/template" "$TMP/pg"
  [ $# -gt 0 ] && printf '%s\n' "$@" >>"$TMP/pg/postgresql.conf"
  "$PGBIN/pg_ctl" -D "$TMP/pg" -l "$TMP/postgres.log" -w start >/dev/null
  # Steady state, as in a server that has been running: the maintenance jobs
  # have just run (run_maintenance does nothing before a source exists, so
  # their functions are called and recorded as runs), so that they are not
  # all due in the first second of the measurement; and the partitions of the
  # data sets' hours exist (maintenance creates them a day ahead of the
  # clock, but the data sets start an hour back).
  q "SELECT adstream.create_partitions_ahead(), adstream.drop_expired_partitions(), adstream.refresh_rollups(),
            sum(adstream.ensure_partitions(name, ARRAY(SELECT generate_series(now() - interval '3 hours', now(), interval '1 hour'))))
       FROM adstream.partitioned_tables" >/dev/null
  q "INSERT INTO adstream.maintenance_runs (job, last_start, last_duration, last_ok, last_result)
     SELECT j, now(), interval '0', now(), 'run by bench/measure.sh before the measurement'
       FROM unnest(ARRAY['adstream_partitions', 'adstream_retention', 'adstream_rollups']) j" >/dev/null
}
postmaster_pid() { head -1 "$TMP/pg/postmaster.pid"; }
server_cpu() { bench/proc_stats.pl tree "$(postmaster_pid)"; }
wal_lsn() { q "SELECT pg_current_wal_lsn()"; }
wal_since() { q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$1')::bigint"; }
table_bytes() {   # SCHEMA
  q "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '$1' AND c.relkind IN ('r', 'm')"
}
worker_pids() { q "SELECT string_agg(pid::text, ' ') FROM adstream.worker_status() WHERE pid IS NOT NULL"; }
# events set aside so far (their ids held by another worker's running batch; a fresh cluster per run)
set_aside_count() { q "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE schemaname = 'adstream' AND relname = 'set_aside'"; }
# rows of the minute aggregates inserted/updated/updated HOT so far (over its partitions)
minute_rows() {
  q "SELECT coalesce(sum(n_tup_ins), 0) || '/' || coalesce(sum(n_tup_upd), 0) || '/' || coalesce(sum(n_tup_hot_upd), 0)
       FROM pg_stat_user_tables WHERE schemaname = 'adstream' AND relname LIKE 'ad\_stats\_minute\_p%'"
}
orders_worker_pids() { q "SELECT coalesce(string_agg(w.pid::text, ' '), '') FROM adstream.worker_status() w JOIN adstream.sources s ON s.id = w.source_id WHERE s.kind = 'orders' AND w.pid IS NOT NULL"; }
publisher_pids() { q "SELECT coalesce(string_agg(pid::text, ' '), '') FROM adstream.publisher_status() WHERE pid IS NOT NULL"; }
wait_sql() {   # SQL TIMEOUT_S: until SQL returns t
  local deadline=$(( $(date +%s) + $2 ))
  while [ "$(q "$1")" != t ]; do
    [ "$(date +%s)" -ge "$deadline" ] && { log "timed out waiting for: $1"; return 1; }
    sleep 0.1
  done
}

# ---------------------------------------------------------------- checks
# check_truth SCHEMA FILTER TRUTH...: EXACT when every (ad, minute) row, the
# dead letters per reason and the accepted count equal the loadgen's truth.
check_truth() {
  local schema=$1 filter=$2; shift 2
  local load="" f
  for f in "$@"; do load+="\\copy truth_raw FROM '$f'"$'\n'; done
  local res
  res=$(psql_ -At <<EOSQL
CREATE TEMP TABLE truth_raw (line text);
$load
CREATE TEMP VIEW truth_min AS
  SELECT split_part(line, ',', 2)::bigint AS ad_id, split_part(line, ',', 3)::bigint AS campaign_id,
         to_timestamp(split_part(line, ',', 4)::bigint) AS window_start,
         sum(split_part(line, ',', 5)::bigint) AS impressions, sum(split_part(line, ',', 6)::bigint) AS clicks
    FROM truth_raw WHERE line LIKE 'minute,%' GROUP BY 1, 2, 3;
CREATE TEMP VIEW truth_rej AS
  SELECT split_part(line, ',', 2) AS reason, sum(split_part(line, ',', 3)::bigint) AS n
    FROM truth_raw WHERE line LIKE 'reject,%' GROUP BY 1;
CREATE TEMP VIEW got_min AS   -- summed over the rows of each minute (adstream: sources and stripes)
  SELECT ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions)::numeric AS impressions,
         sum(clicks)::numeric AS clicks
    FROM $schema.ad_stats_minute GROUP BY ad_id, window_start;
CREATE TEMP VIEW got_rej AS
  SELECT reason, count(*)::numeric AS n FROM $schema.rejected_events WHERE $filter GROUP BY 1;
SELECT (SELECT count(*) FROM ((TABLE truth_min EXCEPT TABLE got_min) UNION ALL (TABLE got_min EXCEPT TABLE truth_min)) d)
     + (SELECT count(*) FROM ((TABLE truth_rej EXCEPT TABLE got_rej) UNION ALL (TABLE got_rej EXCEPT TABLE truth_rej)) d),
       (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,unique,%'),
       (SELECT sum(accepted) FROM $schema.offsets WHERE $filter);
EOSQL
)
  local diff unique accepted
  IFS='|' read -r diff unique accepted <<<"$res"
  if [ "$diff" = 0 ] && [ "$unique" = "$accepted" ]; then echo EXACT
  else echo "MISMATCH(${diff}_rows_or_reasons_differ;accepted_${accepted}_of_${unique})"; fi
}

# check_orders TRUTH: every order and its attribution against the truth
check_orders() {
  local res
  res=$(psql_ -At <<EOSQL
CREATE TEMP TABLE truth_raw (line text);
\\copy truth_raw FROM '$1'
CREATE TEMP VIEW want AS
  SELECT split_part(line, ',', 2)::uuid AS order_id, nullif(split_part(line, ',', 3), '')::bigint AS ad_id,
         nullif(split_part(line, ',', 5), '')::uuid AS event_id, split_part(line, ',', 8)::numeric AS amount
    FROM truth_raw WHERE line LIKE 'order,%';
CREATE TEMP VIEW got AS SELECT order_id, ad_id, event_id, amount FROM adstream.orders;
SELECT count(*) FROM ((TABLE want EXCEPT TABLE got) UNION ALL (TABLE got EXCEPT TABLE want)) d;
EOSQL
)
  if [ "$res" = 0 ]; then echo EXACT; else echo "MISMATCH(${res}_orders_differ)"; fi
}

# ---------------------------------------------------------------- CSV
COLUMNS_CSV="id,group,description,workers,ads,dup_ratio,messages,seconds,events_per_s,sustained_per_s,worker_cpu_s,server_cpu_s,client_cpu_s,wal_bytes,table_bytes,worker_hwm_kb,worker_rss_kb,stored_before,drain_s,p50_ms,p99_ms,max_ms,check,lock_pct,waits,set_aside,minute_rows"
echo "$COLUMNS_CSV" >"$CSV"
NCOLUMNS=$(awk -F, '{ print NF }' <<<"$COLUMNS_CSV")
row() {   # the fields of a results.csv line; those not given are empty
  local IFS=, f=("$@")
  while [ ${#f[@]} -lt "$NCOLUMNS" ]; do f+=(""); done
  echo "${f[*]}" >>"$CSV"
}

# ---------------------------------------------------------------- 1. the ceiling
want raw && for i in 1 2 3; do
  out=$("$BBIN/raw_consumer" --brokers "$BROKERS" --topic ads)
  RDKAFKA_VERSION=$(kv librdkafka "$out")
  msgs=$(kv msgs "$out")
  [ "$msgs" = "$SENT_base" ] || { log "raw consumer read $msgs of $SENT_base messages (broker trimmed?)"; exit 1; }
  log "raw librdkafka, run $i: $out"
  row "raw_$i" raw "raw librdkafka consumer (read only)" 1 1000 0.10 "$msgs" "$(kv seconds "$out")" \
    "$(kv msgs_per_s "$out")" "$(kv sustained_per_s "$out")" "" "" "" "" "" "" "" "" "" "" "" "" "complete" "" ""
done
# The same topic read by kcat (librdkafka's own command-line client, its
# defaults), timed from start to exit, printing only each message's offset.
kcat_read() {
  local t0 t1 n
  t0=$(now_us)
  n=$(kcat -C -b "$BROKERS" -t ads -o beginning -e -q -f '%o\n' | wc -l)
  t1=$(now_us)
  [ "$n" = "$SENT_base" ] || { log "kcat read $n of $SENT_base messages"; exit 1; }
  local secs rate
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
  rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  log "kcat: $n messages in $secs s: $rate/s (start to exit)"
  row kcat raw "kcat -C -e (start to exit)" 1 1000 0.10 "$n" "$secs" "$rate" "" "" "" "" "" "" "" "" "" "" "" "" "" "complete" "" ""
}
if ! want raw; then :; elif command -v kcat >/dev/null; then kcat_read; else log "kcat not installed: no cross-check of the ceiling"; fi

# ---------------------------------------------------------------- 2. adstream runs
# measure_adstream ID GROUP DESC TOPIC WORKERS SENT ADS DUP TRUTH [attribution] [sink]
measure_adstream() {
  local id=$1 group=$2 desc=$3 topic=$4 workers=$5 sent=$6 ads=$7 dup=$8 truth=$9
  local attr=${10:-} sink=${11:-}
  local conf=()
  # Orders beyond the last event wait attribution_max_wait; keep it well
  # above the time the events take, so that no order is judged early.
  [ -n "$attr" ] && conf+=("adstream.attribution_max_wait = '${ATTR_WAIT_S:-60}s'")
  [ -n "${RUN_CONF:-}" ] && conf+=("$RUN_CONF")   # a setting of this run alone
  fresh_cluster "${conf[@]}"
  local wal0 bytes0 cpu0 t0 poll t_end drain="" check
  wal0=$(wal_lsn); bytes0=$(table_bytes adstream); cpu0=$(server_cpu)
  [ -n "$sink" ] && q "SELECT adstream.create_sink('pinot', '$SINK')" >/dev/null
  t0=$(now_us)
  "$BBIN/offset_poller" --db "$CONN" --sources ads --interval-ms 20 --until "$sent" --timeout-s 900 --waits \
    >"$TMP/$id.poll" &
  local poller=$!
  q "SELECT adstream.create_source('ads', '$(broker_of "$topic")', '$topic', options => '{\"workers\": $workers$KAFKA_OPTS}')" >/dev/null
  [ -n "$attr" ] && q "SELECT adstream.create_source('shop', '$BROKERS', 'orders', 'orders', '{\"workers\": 1$KAFKA_OPTS}')" >/dev/null
  wait $poller || { log "$id: events not consumed in time"; cat "$TMP/$id.poll" >&2; exit 1; }
  poll=$(cat "$TMP/$id.poll")
  t_end=$(kv done_us "$poll")
  if [ -n "$attr" ]; then
    # every order read, and every order the events have caught up with judged
    wait_sql "SELECT coalesce(sum(next_offset), 0) >= $ORDERS_SENT_base FROM adstream.offsets WHERE source = 'shop'" 900
    wait_sql "SELECT count(*) = 0 FROM adstream.orders WHERE status = 'waiting' AND ts <= adstream.ad_events_watermark()" 900
    t_end=$(now_us)
  fi
  if [ -n "$sink" ]; then
    wait_sql "SELECT count(*) = 0 FROM adstream.sink_status WHERE backlog_rows > 0" 900
    drain=$(awk -v a="$t0" -v b="$(now_us)" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
    # what the sink was given: changes queued (outbox ids drawn), records
    # sent (a key named by several rows of a page is sent once), Kafka
    # transactions
    log "$id: sink: $(q "SELECT 'outbox rows ' || (SELECT coalesce(last_value, 0) FROM adstream.outbox_id_seq)
                              || ', records ' || records_published || ', Kafka transactions ' || txns_committed
                         FROM adstream.sinks")"
  fi
  local wpids ppids wcpu scpu mem wal bytes
  wpids=$(worker_pids); ppids=$(publisher_pids)
  wcpu=$(bench/proc_stats.pl cpu $wpids $ppids)
  local pubcpu=""   # the publisher's share of it
  [ -n "$ppids" ] && pubcpu=$(bench/proc_stats.pl cpu $ppids)
  local opids ordcpu=""   # and the orders worker's (attribution)
  opids=$(orders_worker_pids)
  [ -n "$opids" ] && ordcpu=$(bench/proc_stats.pl cpu $opids)
  mem=$(bench/proc_stats.pl mem $wpids)
  scpu=$(awk -v a="$cpu0" -v b="$(server_cpu)" 'BEGIN { printf "%.2f", b - a }')
  wal=$(wal_since "$wal0")
  bytes=$(( $(table_bytes adstream) - bytes0 ))
  check=$(check_truth adstream "source = 'ads'" "$truth")
  if [ -n "$attr" ]; then
    wait_sql "SELECT count(*) = 0 FROM adstream.waiting_orders" $(( ${ATTR_WAIT_S:-60} + 120 ))
    check="$check/orders_$(check_orders "$truth")"
  fi
  local secs rate sust
  secs=$(awk -v a="$t0" -v b="$t_end" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
  rate=$(awk -v n="$sent" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  sust=$(awk -v n="$sent" -v a="$(kv t10_us "$poll")" -v b="$(kv t90_us "$poll")" \
    'BEGIN { printf "%.0f", (b > a) ? 0.8 * n / ((b - a) / 1e6) : 0 }')
  [ -n "$attr" ] && sust=""   # the events' 10-90% rate says nothing about the orders
  # what the workers were doing between 10% and 90% (pg_stat_activity samples)
  local samples locks lock_pct waits
  samples=$(kv worker_samples "$poll"); locks=$(kv lock_samples "$poll")
  lock_pct=$(awk -v l="${locks:-0}" -v s="${samples:-0}" 'BEGIN { if (s > 0) printf "%.2f", 100 * l / s }')
  waits=$(kv waits "$poll" | tr ',' ';')
  local aside minute; aside=$(set_aside_count); minute=$(minute_rows)
  log "$id: $sent messages in $secs s: $rate/s overall, ${sust:-n/a}/s sustained (10-90%); worker CPU $wcpu s${pubcpu:+ (publisher $pubcpu s)}${ordcpu:+ (orders worker $ordcpu s)}, server CPU $scpu s, WAL $wal B, tables $bytes B, workers' VmHWM/VmRSS ${mem/ //} kB${drain:+, all published after $drain s}; lock waits ${lock_pct:-?}% of $samples worker samples ($waits); at least $aside events set aside and $minute minute rows inserted/updated/of which HOT (pg_stat_user_tables); $check"
  row "$id" "$group" "$desc" "$workers" "$ads" "$dup" "$sent" "$secs" "$rate" "$sust" "$wcpu" "$scpu" "" \
    "$wal" "$bytes" "${mem% *}" "${mem#* }" "" "$drain" "" "" "" "$check" "$lock_pct" "$waits" "$aside" "$minute"
  LAST_SUSTAINED=$sust
  LAST_RATE=$rate
  LAST_SECONDS=$secs
}

BASE_SUSTAINED=0; ATTR_WAIT_S=60
if want e2e; then
  measure_adstream e2e e2e "adstream end to end" ads $WORKERS "$SENT_base" 1000 0.10 "$TMP/truth-base.csv"
  BASE_SUSTAINED=$LAST_SUSTAINED
  # A run too short for the poller to see its 10-90% (BENCH_QUICK on a fast
  # machine) has no sustained rate: the overall one instead.
  case "$BASE_SUSTAINED" in ''|0|n/a) BASE_SUSTAINED=$LAST_RATE ;; esac
  ATTR_WAIT_S=$(awk -v s="$LAST_SECONDS" 'BEGIN { w = int(3 * s) + 15; print (w > 600) ? 600 : w }')
fi
want publish && measure_adstream e2e_publish e2e "adstream + publishing (sink)" ads $WORKERS "$SENT_base" 1000 0.10 \
  "$TMP/truth-base.csv" "" sink
want publish && measure_adstream e2e_attr_publish e2e "adstream + attribution + publishing" ads $WORKERS "$SENT_base" 1000 0.10 \
  "$TMP/truth-base.csv" attr sink

# ---------------------------------------------------------------- 3. the baselines
# measure_baseline ID PROGRAM DESCRIPTION TOPIC SENT TRUTH: a libpq consumer
# in WORKERS processes, checked against the topic's truth.
measure_baseline() {
  local id=$1 prog=$2 desc=$3 topic=$4 sent=$5 truth=$6
  fresh_cluster
  psql_ -f bench/alt_schema.sql
  local wal0 bytes0 cpu0 t0 pids=() i out ccpu=0 check
  wal0=$(wal_lsn); bytes0=$(table_bytes alt); cpu0=$(server_cpu)
  t0=$(now_us)
  "$BBIN/offset_poller" --db "$CONN" --table alt.offsets --sources "$topic" --interval-ms 20 \
    --until "$sent" --timeout-s 1800 >"$TMP/$id.poll" &
  local poller=$!
  for ((i = 0; i < WORKERS; i++)); do
    "$BBIN/$prog" --brokers "$(broker_of "$topic")" --topic "$topic" --db "$CONN" --worker $i --workers $WORKERS \
      --exit-at-eof >"$TMP/$id.$i.out" 2>"$TMP/$id.$i.err" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || { log "$id: $prog failed"; cat "$TMP"/$id.*.err >&2; exit 1; }; done
  wait $poller || { log "$id: offsets did not reach $sent"; exit 1; }
  local poll t_end
  poll=$(cat "$TMP/$id.poll"); t_end=$(kv done_us "$poll")
  sleep 0.5   # let the backends exit, so that the postmaster has reaped their CPU time
  for ((i = 0; i < WORKERS; i++)); do
    out=$(cat "$TMP/$id.$i.out")
    log "$id consumer $i: $out"
    ccpu=$(awk -v a="$ccpu" -v b="$(kv cpu_s "$out")" 'BEGIN { printf "%.2f", a + b }')
  done
  local scpu wal bytes secs rate sust
  scpu=$(awk -v a="$cpu0" -v b="$(server_cpu)" 'BEGIN { printf "%.2f", b - a }')
  wal=$(wal_since "$wal0")
  bytes=$(( $(table_bytes alt) - bytes0 ))
  check=$(check_truth alt true "$truth")
  secs=$(awk -v a="$t0" -v b="$t_end" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
  rate=$(awk -v n="$sent" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  sust=$(awk -v n="$sent" -v a="$(kv t10_us "$poll")" -v b="$(kv t90_us "$poll")" \
    'BEGIN { printf "%.0f", (b > a) ? 0.8 * n / ((b - a) / 1e6) : 0 }')
  log "$id: $sent messages in $secs s: $rate/s overall, $sust/s sustained; server CPU $scpu s, client CPU $ccpu s, WAL $wal B, tables $bytes B; $check"
  local retries=0
  for ((i = 0; i < WORKERS; i++)); do retries=$(( retries + $(kv retries "$(cat "$TMP/$id.$i.out")") )); done
  check="$check ($retries batches retried after an error)"
  row "$id" baseline "$desc" $WORKERS 1000 0.10 "$sent" "$secs" "$rate" "$sust" \
    "" "$scpu" "$ccpu" "$wal" "$bytes" "" "" "" "" "" "" "" "$check" "" ""
}
want copy && measure_baseline copy copy_consumer "strong baseline (libpq: COPY per batch; set-based dedup and upsert)" \
  ads "$SENT_base" "$TMP/truth-base.csv"
want alt && measure_baseline alt alt_consumer "usual alternative (libpq: one upsert per event)" \
  small "$SENT_small" "$TMP/truth-small.csv"

# ---------------------------------------------------------------- 4. freshness
# measure_freshness ID TOPIC BOOTSTRAP KAFKA_OPTS DESCRIPTION
measure_freshness() {
  local id=$1 topic=$2 boot=$3 kopts=$4 desc=$5
  local rate count
  rate=$(awk -v s="$BASE_SUSTAINED" 'BEGIN { printf "%.0f", s / 2 }')
  count=$(( rate * FRESH_S ))
  # no more than the mock broker keeps (5 MiB in each partition), so
  # that the topic read back for the timestamps still holds every message
  [ "$count" -gt $(( FRESH_PARTITIONS * 23000 )) ] && count=$(( FRESH_PARTITIONS * 23000 ))
  fresh_cluster
  q "SELECT adstream.create_source('ads', '$boot', '$topic', options => '{\"workers\": $WORKERS$kopts}')" >/dev/null
  wait_sql "SELECT count(*) = $WORKERS FROM adstream.worker_status() WHERE state IS NOT NULL AND pid IS NOT NULL AND state <> 'starting'" 60 || true
  sleep 2   # the workers connect and learn the partitions
  log "$id: $count messages at $rate/s (50% of the sustained rate), produced in real time"
  "$BBIN/offset_poller" --db "$CONN" --sources ads --interval-ms 5 --until "$count" --timeout-s 600 \
    --out "$TMP/$id.offsets" >"$TMP/$id.poll" &
  local poller=$!
  # A real-time producer, as a high-volume one is set up: linger.ms = 20
  # (the produce time, CreateTime, is taken before the linger, so it counts).
  "$BIN/adstream-loadgen" --brokers "$boot" --topic "$topic" --partitions $FRESH_PARTITIONS --count "$count" \
    --rate "$rate" --realtime --linger-ms 20 --seed 21 --ads 1000 --dup-ratio 0.10 "${LG_COMMON[@]}" \
    --truth "$TMP/truth-$id.csv" >"$TMP/loadgen-$id.out" 2>>"$TMP/loadgen.err"
  local produced
  produced=$(kv rate "$(cat "$TMP/loadgen-$id.out")")
  log "$id: the producer reached $produced messages/s of the $rate asked ($(kv records_per_set "$(cat "$TMP/loadgen-$id.out")") records per message set)"
  wait $poller || { log "$id: not consumed in time"; exit 1; }
  local poll check stats
  poll=$(cat "$TMP/$id.poll")
  check=$(check_truth adstream "source = 'ads'" "$TMP/truth-$id.csv")
  "$BBIN/raw_consumer" --brokers "$boot" --topic "$topic" --timestamps "$TMP/$id.timestamps" >/dev/null
  # Join: message (p, offset, produced_ms) became visible at the first poll
  # whose next_offset for p exceeded offset.  Sorting both by (p, key) with
  # key = offset for messages and next_offset - 1 for polls puts each message
  # just before the poll that first covered it.
  stats=$( { awk '{ print $1, $2, 0, $3 }' "$TMP/$id.timestamps"
             awk '{ print $3, $4 - 1, 1, $1 }' "$TMP/$id.offsets"; } |
    sort -k1,1n -k2,2n -k3,3n |
    awk 'function flush() { n = 0 }
         $1 != p { unseen += n; flush(); p = $1 }
         $3 == 0 { ts[n++] = $4; next }
         { for (i = 0; i < n; i++) printf "%.0f %.3f\n", ts[i], $4 / 1000 - ts[i]; flush() }
         END { unseen += n; print "unseen", unseen > "/dev/stderr" }' 2>"$TMP/$id.unseen" \
    >"$TMP/$id.joined"
    # latency by second of production, to see whether it was steady
    awk '{ s[int($1 / 1000)] += $2; c[int($1 / 1000)]++ }
         END { for (k in s) print k, s[k] / c[k] }' "$TMP/$id.joined" | sort -n |
      awk 'NR == 1 { f = $1 } { print $1 - f, $2 }' >"$TMP/$id.by_second"
    cut -d' ' -f2 "$TMP/$id.joined" | sort -n >"$TMP/$id.latencies_ms"
    awk '{ v[NR] = $1; s += $1 }
         END { if (NR == 0) { print "0 0 0 0 0"; exit }
               i50 = int(0.50 * NR); if (i50 < 1) i50 = 1
               i99 = int(0.99 * NR); if (i99 < 1) i99 = 1
               printf "%d %.1f %.1f %.1f %.1f\n", NR, v[i50], v[i99], v[NR], s / NR }' "$TMP/$id.latencies_ms")
  local n p50 p99 max mean unseen
  read -r n p50 p99 max mean <<<"$stats"
  unseen=$(awk '{ print $2 }' "$TMP/$id.unseen")
  local note="poll every 5 ms over one connection: mean poll query $(kv mean_query_us "$poll") µs, longest gap between polls $(kv max_interval_us "$poll") µs; $n messages, $unseen never seen"
  log "$id: p50 $p50 ms, p99 $p99 ms, max $max ms, mean $mean ms ($note); $check"
  if [ "$id" = fresh ]; then FRESH_NOTE=$note; else FRESH_DEFAULT_NOTE=$note; fi
  # seconds: how long the producer took; sustained_per_s: the rate it reached
  row "$id" fresh "$desc" $WORKERS 1000 0.10 "$count" "$(kv seconds "$(cat "$TMP/loadgen-$id.out")")" "$rate" "$produced" "" "" "" "" "" "" "" "" "" \
    "$p50" "$p99" "$max" "$check" "" ""
}
want fresh && measure_freshness fresh fresh "$BOOT_b_fresh" "$KAFKA_OPTS" "freshness at 50% of the sustained rate (fetch.wait.max.ms = 10)"
# The product's own fetch.wait.max.ms (librdkafka's default, 500 ms): the
# mock broker holds a fetch that finds nothing new for that long.
want fresh && measure_freshness fresh_default fresh2 "$BOOT_b_fresh2" "" "freshness at 50% of the sustained rate (the product's fetch.wait.max.ms)"

# ---------------------------------------------------------------- 4b. attribution in real time
# Ad events and orders produced together in real time (loadgen
# --orders-interleaved: an order at the clock's time, one per ten events),
# at a tenth of the sustained rate, consumed as they come: what an order
# costs when it arrives just ahead of the ad events' watermark, held until
# the watermark passes it (adstream.attribution_hold, the default) or
# stored waiting at once and judged by a pass (attribution_hold = 0).
# Measured from the first message to every event consumed and every order
# stored; then the orders produced after the last event (beyond the final
# watermark) are judged after attribution_max_wait (5 s here) and all is
# checked against the truth.  decided: how long after its time an order was
# judged (decided_at - ts), over the orders at the clock's time.
measure_attr_realtime() {   # ID TOPIC BOOT HOLD DESC
  local id=$1 topic=$2 boot=$3 hold=$4 desc=$5
  local rate count orders
  rate=$(awk -v s="$BASE_SUSTAINED" 'BEGIN { printf "%.0f", (s > 0 ? s : 1000000) / 10 }')
  count=$(( rate * FRESH_S ))
  [ "$count" -gt $(( FRESH_PARTITIONS * 20000 )) ] && count=$(( FRESH_PARTITIONS * 20000 ))
  orders=$(( count / 10 ))
  fresh_cluster "adstream.attribution_hold = '$hold'" "adstream.attribution_max_wait = '5s'"
  q "SELECT adstream.create_source('shop', '$boot', '${topic}o', 'orders', '{\"workers\": 1$KAFKA_OPTS}')" >/dev/null
  q "SELECT adstream.create_source('ads', '$boot', '$topic', options => '{\"workers\": $WORKERS$KAFKA_OPTS}')" >/dev/null
  wait_sql "SELECT count(*) = $(( WORKERS + 1 )) FROM adstream.worker_status() WHERE state IS NOT NULL AND pid IS NOT NULL AND state <> 'starting'" 60 || true
  sleep 2   # the workers connect and learn the partitions
  local wal0 cpu0 t0 t_end
  wal0=$(wal_lsn); cpu0=$(server_cpu); t0=$(now_us)
  log "$id: $count events and $orders orders at $rate/s (10% of the sustained rate), produced in real time, attribution_hold = $hold"
  "$BIN/adstream-loadgen" --brokers "$boot" --topic "$topic" --partitions $FRESH_PARTITIONS --count "$count" \
    --rate "$rate" --realtime --linger-ms 20 --seed 31 --ads 1000 --dup-ratio 0.10 "${LG_COMMON[@]}" \
    --orders-topic "${topic}o" --orders "$orders" --orders-interleaved --truth "$TMP/truth-$id.csv" \
    >"$TMP/loadgen-$id.out" 2>>"$TMP/loadgen.err"
  local sent osent
  sent=$(kv sent "$(cat "$TMP/loadgen-$id.out")"); osent=$(kv orders_sent "$(cat "$TMP/loadgen-$id.out")")
  wait_sql "SELECT coalesce(sum(next_offset), 0) >= $sent FROM adstream.offsets WHERE source = 'ads'" 300 || exit 1
  wait_sql "SELECT coalesce(sum(next_offset), 0) >= $osent FROM adstream.offsets WHERE source = 'shop'" 300 || exit 1
  wait_sql "SELECT count(*) = 0 FROM adstream.orders WHERE status = 'waiting' AND ts <= adstream.ad_events_watermark()" 300 || exit 1
  t_end=$(now_us)
  local scpu ocpu wal secs
  scpu=$(awk -v a="$cpu0" -v b="$(server_cpu)" 'BEGIN { printf "%.2f", b - a }')
  ocpu=$(bench/proc_stats.pl cpu $(orders_worker_pids))
  wal=$(wal_since "$wal0")
  secs=$(awk -v a="$t0" -v b="$t_end" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
  wait_sql "SELECT count(*) = 0 FROM adstream.waiting_orders" 120 || true
  local check stats
  check="$(check_truth adstream "source = 'ads'" "$TMP/truth-$id.csv")/orders_$(check_orders "$TMP/truth-$id.csv")"
  # judged as stored (never waiting) of all orders; decision delay of the orders at the clock's time
  stats=$(q "SELECT count(*) FILTER (WHERE decided_at = received_at) || ' ' || count(*) || ' '
               || coalesce(round(1000 * extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY decided_at - ts))), 0) || ' '
               || coalesce(round(1000 * extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY decided_at - ts))), 0)
             FROM adstream.orders WHERE ts > to_timestamp($t0 / 1e6) - interval '1 second'
               AND ts <= (SELECT max(ts) FROM adstream.ad_events)")
  local at_store total p50 p99 all_store all_total
  read -r at_store total p50 p99 <<<"$stats"
  read -r all_store all_total <<<"$(q "SELECT count(*) FILTER (WHERE decided_at = received_at) || ' ' || count(*) FROM adstream.orders")"
  log "$id: $sent events + $osent orders in $secs s; server CPU $scpu s, orders worker $ocpu s, WAL $wal B; orders judged as stored $all_store of $all_total ($at_store of the $total at the clock's time, decided p50 $p50 ms, p99 $p99 ms after their time); $check"
  row "$id" attr_rt "$desc" $WORKERS 1000 0.10 "$sent" "$secs" "$rate" "" "$ocpu" "$scpu" "" "$wal" "" "" "" "" "" \
    "$p50" "$p99" "" "$check" "" "orders=$all_total;judged_as_stored=$all_store"
}
want attr_rt && measure_attr_realtime attr_rt_hold rt1 "$BOOT_b_rt1" 2s "attribution in real time with orders held for the watermark (attribution_hold 2 s)"
want attr_rt && measure_attr_realtime attr_rt_nohold rt2 "$BOOT_b_rt2" 0 "attribution in real time with orders stored at once (attribution_hold 0)"

# ---------------------------------------------------------------- 5. scaling
# Three rounds, 1 and 4 workers side by side in each: the report takes each
# configuration's run of median server CPU per event (a shared machine's
# speed drifts by tens of percent within minutes).  The second pair closes
# batches by size alone.  On two cores four workers get half a core each,
# so a batch closed batch_max_ms after it began holds about half the
# events of one worker's (closed at batch_max_messages), and what a batch
# costs whatever its size (a row per (ad, minute) it touched, the offsets,
# the commit) weighs twice as much per event.  With batch_max_ms at 1 s
# both close at batch_max_messages: the cost per event of the workers
# themselves.
want scaling && for round in 1 2 3; do
  for w in 1 4; do
    measure_adstream "workers_${w}_r$round" workers "adstream with $w worker(s)" ads $w "$SENT_base" 1000 0.10 "$TMP/truth-base.csv"
    RUN_CONF="adstream.batch_max_ms = 1000" measure_adstream "workers_${w}_sized_r$round" workers \
      "adstream with $w worker(s) and batches closed by size (batch_max_ms = 1000)" ads $w "$SENT_base" 1000 0.10 "$TMP/truth-base.csv"
  done
done
want variants && measure_adstream ads_100k ads "adstream with 100k distinct ads" ads100k $WORKERS "$SENT_ads100k" 100000 0.10 "$TMP/truth-ads100k.csv"
want variants && measure_adstream dup_0 dup "adstream with 0% duplicates" dup0 $WORKERS "$SENT_dup0" 1000 0 "$TMP/truth-dup0.csv"

# ---------------------------------------------------------------- 6. growth
# Consecutive rounds into one database: the source is paused while each
# round is produced, then resumed; event time moves on by the span per round
# and stays within the dedup horizon, so every id stays in the dedup index.
measure_growth() {
  fresh_cluster
  local start_ms=$(( $(date +%s) * 1000 - 3600 * 1000 )) r total=0 truths=()
  for ((r = 1; r <= GROW_ROUNDS; r++)); do
    if [ $r -gt 1 ]; then
      q "SELECT adstream.pause_source('ads')" >/dev/null
      wait_sql "SELECT count(*) = 0 FROM adstream.worker_status() WHERE pid IS NOT NULL" 60
    fi
    produce "grow$r" grow --count "$GROW_EVENTS" --seed $((100 + r)) --ads 1000 --dup-ratio 0.10 \
      --start-ms $(( start_ms + (r - 1) * 600 * 1000 )) --span-s 600
    local sent stored=$total
    eval "sent=\$SENT_grow$r"
    total=$(( total + sent ))
    truths+=("$TMP/truth-grow$r.csv")
    local wal0 cpu0 bytes0 t0 poll
    wal0=$(wal_lsn); cpu0=$(server_cpu); bytes0=$(table_bytes adstream)
    t0=$(now_us)
    "$BBIN/offset_poller" --db "$CONN" --sources ads --interval-ms 20 --until "$total" --timeout-s 900 \
      >"$TMP/grow$r.poll" &
    local poller=$!
    if [ $r -eq 1 ]; then
      q "SELECT adstream.create_source('ads', '$BOOT_b_grow', 'grow', options => '{\"workers\": $WORKERS$KAFKA_OPTS}')" >/dev/null
    else
      q "SELECT adstream.resume_source('ads')" >/dev/null
    fi
    wait $poller || { log "growth round $r: not consumed in time"; exit 1; }
    poll=$(cat "$TMP/grow$r.poll")
    local secs rate scpu wal bytes
    secs=$(awk -v a="$t0" -v b="$(kv done_us "$poll")" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
    rate=$(awk -v n="$sent" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
    scpu=$(awk -v a="$cpu0" -v b="$(server_cpu)" 'BEGIN { printf "%.2f", b - a }')
    wal=$(wal_since "$wal0")
    bytes=$(( $(table_bytes adstream) - bytes0 ))
    log "growth round $r: $sent messages on top of $stored in $secs s: $rate/s; server CPU $scpu s, WAL $wal B"
    row "grow_$r" grow "adstream round $r into the same database" $WORKERS 1000 0.10 "$sent" "$secs" "$rate" "" \
      "" "$scpu" "" "$wal" "$bytes" "" "" "$stored" "" "" "" "" "pending" "" ""
  done
  local check
  check=$(check_truth adstream "source = 'ads'" "${truths[@]}")
  log "growth: all rounds against the truth: $check"
  sed -i "/^grow_/s/,pending,/,$check,/" "$CSV"
  # the dedup index after the rounds: every id of every round is remembered
  IFS='|' read -r DEDUP_CAPACITY DEDUP_ENTRIES DEDUP_SHM_BYTES <<<"$(q "SELECT capacity, entries, shared_memory_bytes FROM adstream.dedup_index_status()")"
  log "dedup index after the rounds: $DEDUP_ENTRIES ids of capacity $DEDUP_CAPACITY in $DEDUP_SHM_BYTES bytes of shared memory"
}
want growth && measure_growth

"$PGBIN/pg_ctl" -D "$TMP/pg" -m fast -w stop >/dev/null

# ---------------------------------------------------------------- report
BENCH_SECONDS=$(( $(date +%s) - BENCH_T0 ))
cat >"$TMP/meta.env" <<EOM
MODE=$MODE${ONLY:+ (only: $ONLY)}
COMMAND=$( [ "$QUICK" = 1 ] && echo "BENCH_QUICK=1 " )${BENCH_COMMAND:-make bench}
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
DURATION_S=$BENCH_SECONDS
NPROC=$(nproc)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEMORY=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
KERNEL=$(uname -sr)
PG=$PG_VERSION
LIBRDKAFKA=${RDKAFKA_VERSION:-$(pkg-config --modversion rdkafka 2>/dev/null)}
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
EVENTS=$EVENTS
PARTITIONS=$PARTITIONS
WORKERS=$WORKERS
ORDERS=$ORDERS_SENT_base
ORDER_PARTITIONS=$ORDER_PARTITIONS
FRESH_NOTE=${FRESH_NOTE:-}
FRESH_DEFAULT_NOTE=${FRESH_DEFAULT_NOTE:-}
RECORDS_PER_SET=$PER_SET_base
MESSAGE_SETS=$SETS_base
DEDUP_CAPACITY=${DEDUP_CAPACITY:-}
DEDUP_ENTRIES=${DEDUP_ENTRIES:-}
DEDUP_SHM_BYTES=${DEDUP_SHM_BYTES:-}
ATTR_WAIT_S=$ATTR_WAIT_S
EOM
perl bench/report.pl "$TMP/meta.env" "$CSV" "$OUT"
log "done in $BENCH_SECONDS s: $OUT/results.md"
