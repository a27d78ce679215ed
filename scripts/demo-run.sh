#!/usr/bin/env bash
# The demo itself, run as an ordinary user from the top of the tree:
#   1. live traffic for a while, with progress from adstream.source_status;
#   2. a burst of pre-produced events, to measure sustained ingestion;
#   3. per-minute aggregates, dead letters and source_status, checked
#      against the load generator's ground truth.
set -euo pipefail

BIN=$PWD/test/bin
PGBIN=$(pg_config --bindir)
DIR=$PWD/demo_data
PORT=${DEMO_PORT:-54329}
LIVE_EVENTS=${DEMO_LIVE_EVENTS:-20000}
LIVE_RATE=${DEMO_LIVE_RATE:-2000}
BURST_EVENTS=${DEMO_BURST_EVENTS:-300000}
PARTITIONS=16

rm -rf "$DIR"; mkdir -p "$DIR"
psql_() { "$PGBIN/psql" -X -q -h "$DIR" -p "$PORT" -d postgres "$@"; }

cleanup() {
  "$PGBIN/pg_ctl" -D "$DIR/pg" -m fast -w stop >/dev/null 2>&1 || true
  exec 3>&- 4>&- 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== starting the embedded Kafka broker and a throwaway PostgreSQL in $DIR"
mkfifo "$DIR/broker.ctl"
"$BIN/adstream-mock-broker" --topic "ad_events:$PARTITIONS" <"$DIR/broker.ctl" >"$DIR/broker.out" 2>&1 &
exec 3>"$DIR/broker.ctl"        # the broker lives as long as this descriptor
for _ in $(seq 100); do grep -q BOOTSTRAP "$DIR/broker.out" && break; sleep 0.1; done
BROKERS=$(awk '/^BOOTSTRAP/ {print $2}' "$DIR/broker.out")
echo "   broker at $BROKERS, topic ad_events with $PARTITIONS partitions"

# A second cluster stands for the Kafka that Pinot ingests from.
mkfifo "$DIR/sink.ctl"
"$BIN/adstream-mock-broker" --topic adstream.ad_stats:4 --topic adstream.attributed_orders:2 \
  <"$DIR/sink.ctl" >"$DIR/sink.out" 2>&1 &
exec 4>"$DIR/sink.ctl"
for _ in $(seq 100); do grep -q BOOTSTRAP "$DIR/sink.out" && break; sleep 0.1; done
SINK=$(awk '/^BOOTSTRAP/ {print $2}' "$DIR/sink.out")
echo "   Pinot's Kafka at $SINK"

"$PGBIN/initdb" -D "$DIR/pg" -A trust >/dev/null
cat >>"$DIR/pg/postgresql.conf" <<EOC
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'adstream'
adstream.database = 'postgres'
max_worker_processes = 16
EOC
"$PGBIN/pg_ctl" -D "$DIR/pg" -l "$DIR/postgres.log" -w start >/dev/null
psql_ -c "CREATE EXTENSION adstream"
psql_ -c "SELECT adstream.create_source('demo', '$BROKERS', 'ad_events', options => '{\"workers\": 2}')" >/dev/null
psql_ -c "SELECT adstream.create_sink('pinot', '$SINK')" >/dev/null
echo "   source 'demo' created with 2 consumer workers; sink 'pinot' publishes the results"

echo
echo "== 1. live traffic: $LIVE_EVENTS events at $LIVE_RATE/s (10% clicks, duplicates, malformed and late records)"
"$BIN/adstream-loadgen" --brokers "$BROKERS" --topic ad_events --count "$LIVE_EVENTS" --rate "$LIVE_RATE" \
  --realtime --seed 1 --truth "$DIR/truth-live.csv" >"$DIR/loadgen-live.out" &
LG=$!
while kill -0 $LG 2>/dev/null; do
  sleep 2
  psql_ -At -c "SELECT format('   committed offsets %s | accepted %s | duplicates %s | dead letters %s | lag %s',
                  sum(next_offset), sum(accepted), sum(duplicates), sum(rejected), sum(lag))
                FROM adstream.source_status"
done
wait $LG
LIVE_SENT=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' "$DIR/loadgen-live.out")

wait_consumed() {
  for _ in $(seq 600); do
    [ "$(psql_ -At -c "SELECT coalesce(sum(next_offset), 0) >= $1 FROM adstream.offsets")" = t ] && return 0
    sleep 0.1
  done
  echo "demo: timed out waiting for $1 messages" >&2; return 1
}
wait_consumed "$LIVE_SENT"

echo
echo "== 2. throughput: $BURST_EVENTS events produced while the source is paused, then consumed"
psql_ -c "SELECT adstream.pause_source('demo')" >/dev/null
"$BIN/adstream-loadgen" --brokers "$BROKERS" --topic ad_events --count "$BURST_EVENTS" --seed 2 \
  --truth "$DIR/truth-burst.csv" >"$DIR/loadgen-burst.out"
BURST_SENT=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' "$DIR/loadgen-burst.out")
T0=$(date +%s.%N)
psql_ -c "SELECT adstream.resume_source('demo')" >/dev/null
wait_consumed $((LIVE_SENT + BURST_SENT))
T1=$(date +%s.%N)
awk -v n="$BURST_SENT" -v a="$T0" -v b="$T1" \
  'BEGIN { printf "   %d events validated, deduplicated, aggregated and committed in %.2f s: %.0f events/s\n", n, b - a, n / (b - a) }'

echo
echo "== 3. results"
echo "-- per-minute aggregates (latest 8 minutes)"
psql_ -c "SET timezone = 'UTC'" -c "SELECT window_start, count(*) AS ads, sum(impressions) AS impressions, sum(clicks) AS clicks
          FROM adstream.ad_stats_minute GROUP BY 1 ORDER BY 1 DESC LIMIT 8"
echo "-- dead letters by reason"
psql_ -c "SELECT reason, count(*) FROM adstream.rejected_events GROUP BY 1 ORDER BY 2 DESC"
echo "-- source_status"
psql_ -c "SELECT source, partition, worker_pid, worker_state, next_offset, high_watermark, lag, accepted, duplicates, rejected
          FROM adstream.source_status ORDER BY partition"

echo "-- checked against the load generator's ground truth"
psql_ -At <<EOSQL
CREATE TEMP TABLE truth_raw (line text);
\copy truth_raw FROM '$DIR/truth-live.csv'
\copy truth_raw FROM '$DIR/truth-burst.csv'
CREATE TEMP VIEW truth_min AS
  SELECT split_part(line, ',', 2)::bigint AS ad_id, to_timestamp(split_part(line, ',', 4)::bigint) AS window_start,
         sum(split_part(line, ',', 5)::bigint) AS impressions, sum(split_part(line, ',', 6)::bigint) AS clicks
    FROM truth_raw WHERE line LIKE 'minute,%' GROUP BY 1, 2;
CREATE TEMP VIEW got_min AS
  SELECT ad_id, window_start, impressions::numeric, clicks::numeric FROM adstream.ad_stats_minute;
SELECT format('   %s (ad, minute) rows expected, %s differ; %s dead letters expected, %s stored: %s',
  (SELECT count(*) FROM truth_min),
  (SELECT count(*) FROM ((TABLE truth_min EXCEPT TABLE got_min) UNION ALL (TABLE got_min EXCEPT TABLE truth_min)) d),
  (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,rejected,%'),
  (SELECT count(*) FROM adstream.rejected_events),
  CASE WHEN (SELECT count(*) FROM ((TABLE truth_min EXCEPT TABLE got_min) UNION ALL (TABLE got_min EXCEPT TABLE truth_min)) d) = 0
        AND (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,rejected,%')
            = (SELECT count(*) FROM adstream.rejected_events)
       THEN 'EXACT' ELSE 'MISMATCH' END);
EOSQL

echo
echo "== 4. what reached Pinot's topics"
for _ in $(seq 600); do
  [ "$(psql_ -At -c "SELECT backlog_rows = 0 FROM adstream.sink_status")" = t ] && break; sleep 0.1
done
psql_ -c "SELECT sink, records_published, txns_committed, txns_aborted, backlog_rows FROM adstream.sink_status"
"$BIN/adstream-upsert-reader" --brokers "$SINK" --topic adstream.ad_stats >"$DIR/pinot.jsonl" 2>/dev/null
echo "-- two records of adstream.ad_stats, as Pinot ingests them"
head -2 "$DIR/pinot.jsonl" | sed 's/^/   /'
psql_ -At <<EOSQL
CREATE TEMP TABLE pinot (j jsonb);
\copy pinot FROM '$DIR/pinot.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SELECT format('   Pinot upsert view: %s rows, %s impressions, %s clicks; differing from ad_stats_minute: %s',
  count(*), sum((j->>'impressions')::bigint), sum((j->>'clicks')::bigint),
  (SELECT count(*) FROM ((SELECT (j->>'ad_id')::bigint, to_timestamp((j->>'window_start')::bigint / 1000.0),
                                 (j->>'impressions')::bigint, (j->>'clicks')::bigint FROM pinot
                          EXCEPT SELECT ad_id, window_start, impressions, clicks FROM adstream.ad_stats_minute)
                         UNION ALL
                         (SELECT ad_id, window_start, impressions, clicks FROM adstream.ad_stats_minute
                          EXCEPT SELECT (j->>'ad_id')::bigint, to_timestamp((j->>'window_start')::bigint / 1000.0),
                                 (j->>'impressions')::bigint, (j->>'clicks')::bigint FROM pinot)) d))
  FROM pinot;
EOSQL

echo
echo "== shutting down"
