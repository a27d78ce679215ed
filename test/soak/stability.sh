#!/usr/bin/env bash
# Long-running stability check (make stability; not part of make test).
#
# A throwaway server with adstream, the embedded broker, a sink, and the load
# generator producing a steady, realistic stream (--realtime: event time is
# the wall clock; 10% clicks, duplicates, malformed, late and future records)
# for DURATION seconds.  Every SAMPLE seconds it records:
#   - VmRSS and RssAnon (private memory) of each adstream worker process
#     (launcher, consumers, publisher);
#   - the oldest backend_xmin / backend_xid age in pg_stat_activity, in
#     transactions and in seconds (how far the xmin horizon is held back;
#     polled every second, the interval's maximum is kept);
#   - pg_total_relation_size of ad_stats_minute (all partitions), offsets,
#     outbox, rejected_events, dedup_log;
#   - dead tuples, updates and HOT updates of the minute partitions and of
#     offsets, and autovacuum runs;
#   - the server log size and the consumer lag.
# VmRSS also counts the shared memory a process has touched (shared_buffers,
# the dedup index), which grows with use; RssAnon is where a leak would show.
# At the end it prints the samples, a summary and a verdict:
#   RSS flat      last third's mean RssAnon of each worker within 10% of the
#                 first third's (the first WARMUP seconds are ignored)
#   xmin          no xmin or xid held longer than XMIN_MAX_S seconds
#   bloat         dead tuples of the minute partitions and offsets bounded
#                 (at most 2x live + 1000 at the end, and not growing in the
#                 last third)
#   log           the server log grows by less than 1 byte per 100 events
#   lag           the consumer keeps up (lag at the end of the load < 2 s of it)
#   exact         accepted and dead letters equal the load generator's truth
#
# Usage: test/soak/stability.sh [DURATION_S]   (run as a non-root user, with
# the extension installed into the PostgreSQL whose pg_config is first in
# PATH or given as PG_CONFIG).  Environment: RATE (2000 events/s),
# PARTITIONS (64; the mock broker keeps 5 MiB per partition), WORKERS (2),
# SAMPLE (10 s), WARMUP (60 s), XMIN_MAX_S (5), SINK (1: publish to a
# second embedded broker), DIR (/tmp/adstream-stability-$USER), PORT (54331).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${1:-${DURATION:-600}}
RATE=${RATE:-2000}
PARTITIONS=${PARTITIONS:-64}
WORKERS=${WORKERS:-2}
SAMPLE=${SAMPLE:-10}
WARMUP=${WARMUP:-60}
XMIN_MAX_S=${XMIN_MAX_S:-5}
SINK=${SINK:-1}
PORT=${PORT:-54331}
DIR=${DIR:-/tmp/adstream-stability-$(id -un)}
BIN=$PWD/test/bin
PGBIN=$(${PG_CONFIG:-pg_config} --bindir)

if [ "$(id -u)" -eq 0 ]; then
  echo "stability.sh: PostgreSQL refuses to run as root; run as an ordinary user" >&2
  exit 2
fi
[ "$WARMUP" -lt "$DURATION" ] || WARMUP=0

rm -rf "$DIR"; mkdir -p "$DIR"
psql_() { "$PGBIN/psql" -X -q -At -h "$DIR" -p "$PORT" -d postgres "$@"; }
cleanup() {
  [ -n "${LG:-}" ] && kill "$LG" 2>/dev/null || true
  "$PGBIN/pg_ctl" -D "$DIR/pg" -m fast -w stop >/dev/null 2>&1 || true
  exec 3>&- 4>&- 2>/dev/null || true
  for pid in ${BROKER_PIDS:-}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# A mock broker on a fifo held open by descriptor $2 (EOF would stop it).
start_broker() {  # NAME FD ARGS...; sets BOOTSTRAP
  local name=$1 fd=$2; shift 2
  mkfifo "$DIR/$name.ctl"
  eval "exec $fd<>\"\$DIR/\$name.ctl\""
  "$BIN/adstream-mock-broker" "$@" <"$DIR/$name.ctl" >"$DIR/$name.out" 2>&1 3>&- 4>&- &
  BROKER_PIDS="${BROKER_PIDS:-} $!"
  for _ in $(seq 300); do grep -q BOOTSTRAP "$DIR/$name.out" && break; sleep 0.1; done
  BOOTSTRAP=$(awk '/^BOOTSTRAP/ {print $2}' "$DIR/$name.out")
  [ -n "$BOOTSTRAP" ] || { echo "stability: broker $name did not start: $(cat "$DIR/$name.out")" >&2; exit 1; }
}
start_broker broker 3 --topic "ads:$PARTITIONS"
BROKERS=$BOOTSTRAP
if [ "$SINK" = 1 ]; then
  start_broker sink 4 --topic adstream.ad_stats:8 --topic adstream.attributed_orders:2
  SINK_BROKERS=$BOOTSTRAP
fi

"$PGBIN/initdb" -D "$DIR/pg" -A trust >/dev/null
cat >>"$DIR/pg/postgresql.conf" <<EOC
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'adstream'
adstream.database = 'postgres'
max_worker_processes = 16
log_autovacuum_min_duration = -1
EOC
"$PGBIN/pg_ctl" -D "$DIR/pg" -l "$DIR/postgres.log" -w start >/dev/null
psql_ -c "CREATE EXTENSION adstream"
psql_ -c "SELECT adstream.create_source('soak', '$BROKERS', 'ads', options => '{\"workers\": $WORKERS}')" >/dev/null
[ "$SINK" = 1 ] && psql_ -c "SELECT adstream.create_sink('pinot', '$SINK_BROKERS')" >/dev/null

COUNT=$((RATE * DURATION))
echo "== stability: $COUNT events at $RATE/s for $DURATION s, $PARTITIONS partitions, $WORKERS workers, sink=$SINK; data in $DIR"
"$BIN/adstream-loadgen" --brokers "$BROKERS" --topic ads --count "$COUNT" --rate "$RATE" --realtime \
  --seed 7 --truth "$DIR/truth.csv" >"$DIR/loadgen.out" 2>"$DIR/loadgen.err" &
LG=$!

# One sample: a tab-separated line; worker RSS as pid=kB pairs.
sample() {
  local t=$1 rss="" anon="" pid kb
  for pid in $(psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'adstream%' ORDER BY backend_type, pid"); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$kb" ] && rss="$rss${rss:+,}$pid=$kb"
    kb=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$kb" ] && anon="$anon${anon:+,}$pid=$kb"
  done
  psql_ -F $'\t' -c "
WITH act AS (
  SELECT max(age(backend_xmin)) AS xmin_age, max(age(backend_xid)) AS xid_age,
         coalesce(max(extract(epoch FROM now() - xact_start)) FILTER (WHERE backend_xmin IS NOT NULL OR backend_xid IS NOT NULL), 0) AS xact_s
    FROM pg_stat_activity WHERE pid <> pg_backend_pid()),
m AS (
  SELECT coalesce(sum(n_live_tup), 0) AS live, coalesce(sum(n_dead_tup), 0) AS dead,
         coalesce(sum(n_tup_upd), 0) AS upd, coalesce(sum(n_tup_hot_upd), 0) AS hot,
         coalesce(sum(autovacuum_count), 0) AS av
    FROM pg_stat_user_tables WHERE schemaname = 'adstream' AND relname LIKE 'ad\_stats\_minute\_p%'),
o AS (
  SELECT n_live_tup AS live, n_dead_tup AS dead, n_tup_upd AS upd, n_tup_hot_upd AS hot, autovacuum_count AS av
    FROM pg_stat_user_tables WHERE schemaname = 'adstream' AND relname = 'offsets'),
av AS (SELECT coalesce(sum(autovacuum_count), 0) AS n FROM pg_stat_user_tables WHERE schemaname = 'adstream'),
sz AS (
  SELECT (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent = 'adstream.ad_stats_minute'::regclass) AS minute_b,
         (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent = 'adstream.dedup_log'::regclass) AS dedup_b,
         pg_total_relation_size('adstream.offsets') AS offsets_b,
         pg_total_relation_size('adstream.outbox') AS outbox_b,
         pg_total_relation_size('adstream.rejected_events') AS rejected_b)
SELECT $t, '${rss:--}', greatest(coalesce(xmin_age, 0), $XMIN_AGE), greatest(coalesce(xid_age, 0), $XID_AGE),
       greatest(round(xact_s::numeric, 1), $XACT_S),
       minute_b, m.live, m.dead, m.upd, m.hot, o.live, o.dead, o.upd, o.hot, av.n,
       offsets_b, outbox_b, rejected_b, dedup_b,
       (SELECT size FROM pg_stat_file('$DIR/postgres.log')),
       (SELECT coalesce(sum(lag), 0) FROM adstream.source_status),
       (SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets), '${anon:--}'
  FROM act, m, o, av, sz"
}

echo -e "t_s\trss_kB(pid=kB)\txmin_age\txid_age\txact_s\tminute_bytes\tmin_live\tmin_dead\tmin_upd\tmin_hot\toff_live\toff_dead\toff_upd\toff_hot\tautovac\toffsets_bytes\toutbox_bytes\trejected_bytes\tdedup_bytes\tlog_bytes\tlag\tconsumed\trss_anon_kB(pid=kB)" >"$DIR/samples.tsv"
# Between samples, the xmin horizon is polled every second (kept: the max).
XMIN_SQL="SELECT coalesce(max(age(backend_xmin)), 0), coalesce(max(age(backend_xid)), 0),
  coalesce(round(max(extract(epoch FROM now() - xact_start)) FILTER (WHERE backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)::numeric, 1), 0)
  FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
XMIN_AGE=0 XID_AGE=0 XACT_S=0
poll_xmin() {
  local a b c
  IFS='|' read -r a b c <<<"$(psql_ -c "$XMIN_SQL")"
  [ "$a" -gt "$XMIN_AGE" ] && XMIN_AGE=$a
  [ "$b" -gt "$XID_AGE" ] && XID_AGE=$b
  awk -v c="$c" -v m="$XACT_S" 'BEGIN { exit !(c > m) }' && XACT_S=$c
  return 0
}
T0=$(date +%s)
NEXT=$T0
while :; do
  NOW=$(date +%s)
  T=$((NOW - T0))
  S=$(sample "$T")
  echo "$S" >>"$DIR/samples.tsv"
  XMIN_AGE=0 XID_AGE=0 XACT_S=0
  # ... and once after the warm-up, to compare with the end
  [ "$T" -ge "$WARMUP" ] && [ -z "${LOGGED_CTX:-}" ] && LOGGED_CTX=1 &&
    psql_ -c "SELECT count(pg_log_backend_memory_contexts(pid)) FROM pg_stat_activity WHERE backend_type LIKE 'adstream%'" >/dev/null
  echo "$S" | awk -F'\t' '{printf "  t=%4ds  rss %s  anon %s  xmin_age %s (%ss)  minute %.1f MB dead %s hot %s/%s  offsets dead %s  autovac %s  log %s B  lag %s\n",
                                 $1, $2, $23, $3, $5, $6/1048576, $8, $10, $9, $12, $15, $20, $21}'
  kill -0 "$LG" 2>/dev/null || break
  NEXT=$((NEXT + SAMPLE))
  while [ "$(date +%s)" -lt "$NEXT" ] && kill -0 "$LG" 2>/dev/null; do poll_xmin; sleep 1; done
done
wait "$LG" || { echo "stability: load generator failed: $(cat "$DIR/loadgen.err")" >&2; exit 1; }
END_LAG=$(tail -1 "$DIR/samples.tsv" | cut -f21)
SENT=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' "$DIR/loadgen.out")
for _ in $(seq 1200); do
  [ "$(psql_ -c "SELECT coalesce(sum(next_offset), 0) >= $SENT FROM adstream.offsets")" = t ] && break
  sleep 0.5
done
EXACT=$(psql_ <<EOSQL
CREATE TEMP TABLE truth_raw (line text);
\copy truth_raw FROM '$DIR/truth.csv'
SELECT (SELECT sum(accepted) FROM adstream.offsets) = (SELECT split_part(line, ',', 3)::bigint FROM truth_raw WHERE line LIKE 'total,unique,%')
   AND (SELECT count(*) FROM adstream.rejected_events) = (SELECT split_part(line, ',', 3)::bigint FROM truth_raw WHERE line LIKE 'total,rejected,%');
EOSQL
)
RESTARTS=$(psql_ -c "SELECT coalesce(sum(restarts), 0) FROM adstream.worker_status()")
# Memory contexts of every worker at the end, into the server log (after the
# last sample, so the log verdict is unaffected): where RssAnon went.
psql_ -c "SELECT count(pg_log_backend_memory_contexts(pid)) FROM pg_stat_activity WHERE backend_type LIKE 'adstream%'" >/dev/null

echo
echo "== samples ($DIR/samples.tsv)"
column -t -s $'\t' "$DIR/samples.tsv" 2>/dev/null || cat "$DIR/samples.tsv"
echo
perl -e '
use strict; use warnings;
my ($file, $warmup, $xmin_max, $events, $end_lag, $rate, $exact, $restarts, $logfile) = @ARGV;
open(my $fh, "<", $file) or die; <$fh>;
my @s = map { chomp; [ split /\t/ ] } <$fh>;
my @w = grep { $_->[0] >= $warmup } @s;
@w = @s if @w < 3;
my $n = int(@w / 3) || 1;
my @first = @w[0 .. $n - 1];
my @last = @w[-$n .. -1];
# RSS per worker pid, first and last third: VmRSS (column 2) includes the
# shared memory a process has touched (shared_buffers, the dedup index), which
# grows as it is used; RssAnon (column 23) is private memory, where a leak shows.
my (%rss_first, %rss_last, %vm_first, %vm_last);
for my $set ([\@first, \%rss_first, 22], [\@last, \%rss_last, 22], [\@first, \%vm_first, 1], [\@last, \%vm_last, 1]) {
  for my $r (@{ $set->[0] }) {
    next if !defined $r->[ $set->[2] ] || $r->[ $set->[2] ] eq "-";
    for (split /,/, $r->[ $set->[2] ]) { my ($p, $kb) = split /=/; push @{ $set->[1]{$p} }, $kb; }
  }
}
sub mean { my $t = 0; $t += $_ for @_; return @_ ? $t / @_ : 0 }
my ($ok_all, @v) = (1);
sub verdict { my ($ok, $what) = @_; $ok_all &&= $ok; push @v, sprintf("  %-5s %s", $ok ? "PASS" : "FAIL", $what); }
my $rss_ok = 1; my @rss_txt;
for my $p (sort keys %rss_first) {
  next unless $rss_last{$p};
  my ($a, $b) = (mean(@{ $rss_first{$p} }), mean(@{ $rss_last{$p} }));
  my $d = $a ? ($b - $a) / $a * 100 : 0;
  $rss_ok = 0 if abs($d) > 10;
  push @rss_txt, sprintf("pid %d anon %.0f -> %.0f kB (%+.1f%%), VmRSS %.0f -> %.0f kB", $p, $a, $b, $d,
    mean(@{ $vm_first{$p} || [] }), mean(@{ $vm_last{$p} || [] }));
}
verdict($rss_ok && scalar(@rss_txt), "private RSS (RssAnon) flat, first third vs last third after ${warmup}s: " . join("; ", @rss_txt));
my ($max_xmin, $max_xid, $max_xact) = (0, 0, 0);
for (@s) { $max_xmin = $_->[2] if $_->[2] > $max_xmin; $max_xid = $_->[3] if $_->[3] > $max_xid; $max_xact = $_->[4] if $_->[4] > $max_xact; }
verdict($max_xact <= $xmin_max, "xmin horizon: oldest xmin age $max_xmin xids, xid age $max_xid, held at most ${max_xact}s (limit ${xmin_max}s)");
my ($f, $l) = ($s[0], $s[-1]);
my $hot = $l->[8] ? $l->[9] / $l->[8] * 100 : 0;
my $ohot = $l->[12] ? $l->[13] / $l->[12] * 100 : 0;
my $dead_last = mean(map { $_->[7] } @last);
my $dead_first = mean(map { $_->[7] } @first);
my $bloat_ok = $l->[7] <= 2 * $l->[6] + 1000 && $l->[11] <= 2 * $l->[10] + 1000 && $dead_last <= 2 * $dead_first + 1000;
verdict($bloat_ok, sprintf("bloat: minute partitions %.1f MB, %d live / %d dead tuples at the end (mean dead %d first third, %d last), HOT %.1f%% of %d updates; offsets %d kB, %d dead, HOT %.1f%% of %d updates; outbox %d kB; %d autovacuum runs",
  $l->[5] / 1048576, $l->[6], $l->[7], $dead_first, $dead_last, $hot, $l->[8], $l->[15] / 1024, $l->[11], $ohot, $l->[12], $l->[16] / 1024, $l->[14]));
# growth over the run, without the memory-context dumps this script asks for
my $log = 0;
if (open(my $lf, "<", $logfile)) {
  seek($lf, $f->[19], 0);
  my $dump = 0;
  while (my $line = <$lf>) {
    last if tell($lf) > $l->[19];
    $dump = 1 if $line =~ /logging memory contexts of PID/;
    $dump = 0 if $line =~ /^\d{4}-\d\d-\d\d / && $line !~ /LOG:  (level: \d+;|Grand total:|logging memory contexts)/;
    $log += length($line) unless $dump || $line =~ /logging memory contexts of PID/;
  }
}
verdict($log * 100 < $events, sprintf("log: +%d bytes for %d events (%.3f bytes/event)", $log, $events, $events ? $log / $events : 0));
verdict($end_lag < 2 * $rate, "lag: $end_lag messages when the load ended (limit " . 2 * $rate . ")");
verdict($exact eq "t" && $restarts == 0, "exact: accepted and dead letters equal the truth ($exact), worker restarts $restarts");
print "== verdict\n", join("\n", @v), "\n", $ok_all ? "STABLE\n" : "NOT STABLE\n";
exit($ok_all ? 0 : 1);
' "$DIR/samples.tsv" "$WARMUP" "$XMIN_MAX_S" "$SENT" "$END_LAG" "$RATE" "$EXACT" "$RESTARTS" "$DIR/postgres.log"
