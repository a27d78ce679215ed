# Rewinding a source (issue #14, section 4), against the ground truth:
#   1. 'recount' inside the dedup horizon, by offsets and by a time: the
#      counts stay exactly the truth, every replayed valid message is a
#      duplicate (the rewind's counters say so), dead letters are not
#      written twice, and the partitions' own counters do not move;
#   2. 'recount' outside the horizon: after expiry gave up the hours of an
#      old load, a replay counts that load again, each distinct event once
#      (its copies are duplicates), and the recent load not at all: the
#      counts become truth(old) x 2 + truth(recent);
#   3. 'replace': a source counted with a wrong field mapping (ad_id and
#      campaign_id swapped), fixed with alter_source, then one event-time
#      hour replaced: that hour equals the truth, the other hour keeps the
#      old (wrong) result, the window's rows were removed first, and
#      Pinot's upsert view of the sink's topic equals the database;
#   4. a kill -9 of a worker in the middle of a replay: the counts and the
#      rewind's counters are still exact;
#   5. refusals: a forward rewind, an unknown partition, a replace of an
#      orders source, a window not on the hour, a second rewind of a
#      partition still replaying, bad arguments.
#
# The mock broker (librdkafka 2.0.2's mock cluster) does not answer
# ListOffsets by timestamp (it returns -1, "no message at or after", for
# every time): a rewind by time there resolves to the partitions' ends and
# replays nothing, which part 1 checks; the replays below are by offsets.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(floor);
use IPC::Run;

my $broker = AdstreamTest::Broker->start(topics => [ 'rc:4', 'old:2', 'rp:4', 'ord:1' ]);
my $node = AdstreamTest::node('rewind',
	'adstream.max_workers' => 16,
	'adstream.batch_max_messages' => 500);
my $bootstrap = $broker->{bootstrap};
my $now0_ms = int(time() * 1000);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub sql_error
{
	my ($q) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $q);
	return $ret == 0 ? '' : $err;
}

# The (ad, minute) counts one source made, compared with truth files: each
# [file, multiplier, swap] adds its minute lines times the multiplier, with
# ad and campaign swapped when asked (a wrong field mapping counts the
# campaign as the ad).  campaign_id is left out: a swapped count's campaign
# is whichever ad came first.  Returns the number of differing rows.
sub counts_diff
{
	my ($source, $parts, $what) = @_;
	my $load = '';
	for my $p (@$parts)
	{
		my ($file, $mult, $swap) = @$p;
		$load .= "COPY t_line FROM '$file';\n"
		  . "INSERT INTO t_raw SELECT line, $mult, " . ($swap ? 'true' : 'false') . " FROM t_line;\n"
		  . "TRUNCATE t_line;\n";
	}
	my $prelude = qq{
CREATE TEMP TABLE t_line (line text);
CREATE TEMP TABLE t_raw (line text, mult int, swap bool);
$load
CREATE TEMP VIEW want AS
  SELECT CASE WHEN swap THEN split_part(line, ',', 3) ELSE split_part(line, ',', 2) END::bigint AS ad_id,
         to_timestamp(split_part(line, ',', 4)::bigint) AS window_start,
         sum(split_part(line, ',', 5)::bigint * mult) AS impressions, sum(split_part(line, ',', 6)::bigint * mult) AS clicks
    FROM t_raw WHERE line LIKE 'minute,%' GROUP BY 1, 2;
CREATE TEMP VIEW got AS
  SELECT m.ad_id, m.window_start, sum(m.impressions) AS impressions, sum(m.clicks) AS clicks
    FROM adstream.ad_stats_minute m JOIN adstream.sources s ON s.id = m.source_id
   WHERE s.name = '$source' GROUP BY 1, 2 HAVING sum(m.impressions) + sum(m.clicks) > 0;
};
	my ($diff, $rows) = split /\|/, $node->safe_psql('postgres', $prelude . q{
SELECT (SELECT count(*) FROM ((TABLE want EXCEPT TABLE got) UNION ALL (TABLE got EXCEPT TABLE want)) d),
       (SELECT count(*) FROM want);});
	ok($rows > 0, "$what: the expected result has $rows (ad, minute) rows");
	is($diff, 0, "$what: every (ad, minute) count of source $source is as expected");
	diag $node->safe_psql('postgres', $prelude . q{
(TABLE want EXCEPT TABLE got) ORDER BY 1, 2 LIMIT 5; SELECT '--';
(TABLE got EXCEPT TABLE want) ORDER BY 1, 2 LIMIT 5;}) if $diff != 0;
	return $diff;
}

# totals of a truth file: sent, valid, unique, duplicates, rejected
sub totals
{
	my ($file) = @_;
	my %t = map { /^total,(\w+),(\d+)/ ? ($1 => $2) : () } split /\n/, slurp_file($file);
	return \%t;
}

sub wait_rewind
{
	my ($id) = @_;
	$node->poll_query_until('postgres',
		"SELECT bool_and(rewind_finished_at IS NOT NULL) AND NOT bool_or(replaying) FROM adstream.rewind_status WHERE rewind_id = $id")
	  or die "rewind $id did not finish: " . sql("SELECT * FROM adstream.rewind_status WHERE rewind_id = $id");
}

# sum of a rewind's counter over its partitions
sub rw
{
	my ($id, $col) = @_;
	return sql("SELECT sum($col) FROM adstream.rewind_status WHERE rewind_id = $id");
}

sub counters
{
	my ($source) = @_;
	return sql("SELECT sum(accepted) || '/' || sum(duplicates) || '/' || sum(rejected) FROM adstream.offsets WHERE source = '$source'");
}

sub dead_letters
{
	my ($source) = @_;
	return sql("SELECT count(*) FROM adstream.rejected_events WHERE source = '$source'");
}

# Pinot's upsert view (latest version per key) of the sink's ad_stats topic
# against ad_stats_minute summed over sources (as AdstreamTest::check_pinot,
# without the orders this test has none of).
sub pinot_stats
{
	my ($what) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . '/ad_stats.jsonl';
	IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $bootstrap, '--topic', 'adstream.ad_stats' ],
		'>', $file, '2>', "$file.err")
	  or die 'upsert reader failed: ' . slurp_file("$file.err");
	my ($rows, $diff) = split /\|/, sql(qq{
CREATE TEMP TABLE stats_raw (j jsonb);
COPY stats_raw FROM '$file' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
CREATE TEMP VIEW pinot AS
  SELECT (j->>'ad_id')::bigint AS ad_id, to_timestamp((j->>'window_start')::bigint / 1000.0) AS window_start,
         (j->>'impressions')::bigint AS impressions, (j->>'clicks')::bigint AS clicks
    FROM stats_raw WHERE (j->>'impressions')::bigint + (j->>'clicks')::bigint > 0;
CREATE TEMP VIEW db AS
  SELECT ad_id, window_start, sum(impressions)::bigint AS impressions, sum(clicks)::bigint AS clicks
    FROM adstream.ad_stats_minute GROUP BY 1, 2 HAVING sum(impressions) + sum(clicks) > 0;
SELECT (SELECT count(*) FROM db), (SELECT count(*) FROM ((TABLE pinot EXCEPT TABLE db) UNION ALL (TABLE db EXCEPT TABLE pinot)) d);});
	ok($rows > 0, "$what: $rows minute rows to compare");
	is($diff, 0, "$what: Pinot's upsert view of adstream.ad_stats equals ad_stats_minute");
}

# ---- 1. recount inside the horizon ------------------------------------------
sql("SELECT adstream.create_source('rc', '$bootstrap', 'rc', options => '{\"workers\": 2}')");
my $rc = AdstreamTest::loadgen($broker, topic => 'rc', count => 20000, seed => 2301);
my $rc_t = totals($rc->{truth});
AdstreamTest::wait_consumed($node, 'rc', $rc->{sent});
counts_diff('rc', [ [ $rc->{truth}, 1 ] ], 'recount: before');
my $rc_counters = counters('rc');
is($rc_counters, "$rc_t->{unique}/$rc_t->{duplicates}/$rc_t->{rejected}", 'recount: the partitions\' counters equal the truth');
is(dead_letters('rc'), $rc_t->{rejected}, 'recount: one dead letter per rejected message');

# By offsets: partitions 0 and 2 from the start, 1 from its middle; 3 not at all.
my %stored = map { split /\|/ } split /\n/, sql("SELECT partition, next_offset FROM adstream.offsets WHERE source = 'rc'");
my $mid = int($stored{1} / 2);
my $id1 = sql(qq{SELECT adstream.rewind_source('rc', to_offsets => '{"0": 0, "1": $mid, "2": 0}')});
like($id1, qr/^\d+$/, 'recount by offsets: rewind_source returns an id');
is(sql("SELECT string_agg(partition || ':' || from_offset || '-' || to_offset, ' ' ORDER BY partition) FROM adstream.rewind_status WHERE rewind_id = $id1"),
	"0:0-$stored{0} 1:$mid-$stored{1} 2:0-$stored{2}", 'recount by offsets: from the offsets asked to the stored ones');
wait_rewind($id1);
my $replayed = $stored{0} + ($stored{1} - $mid) + $stored{2};
is(rw($id1, 'replayed'), $replayed, "recount by offsets: $replayed messages replayed, each once");
is(rw($id1, 'accepted'), 0, 'recount by offsets: none counted again (all inside the horizon)');
cmp_ok(rw($id1, 'duplicates'), '>', 0, 'recount by offsets: the duplicates counter rose');
is(rw($id1, 'duplicates') + rw($id1, 'rejected'), $replayed, 'recount by offsets: every replayed message a duplicate or a dead letter');
counts_diff('rc', [ [ $rc->{truth}, 1 ] ], 'recount by offsets: after');
is(counters('rc'), $rc_counters, 'recount by offsets: the partitions\' counters did not move');
is(dead_letters('rc'), $rc_t->{rejected}, 'recount by offsets: no dead letter written twice');
is(sql("SELECT sum(next_offset) FROM adstream.offsets WHERE source = 'rc'"), $rc->{sent}, 'recount by offsets: the offsets are back at the end');

# Every partition from the start: every valid message a duplicate.
my $id2 = sql(q{SELECT adstream.rewind_source('rc', to_offsets => '{"0": 0, "1": 0, "2": 0, "3": 0}')});
wait_rewind($id2);
is(rw($id2, 'replayed'), $rc->{sent}, 'recount of everything: every message replayed once');
is(rw($id2, 'duplicates'), $rc_t->{valid}, 'recount of everything: the duplicates are the valid messages');
is(rw($id2, 'rejected'), $rc_t->{rejected}, 'recount of everything: the rejected are the rejected messages');
counts_diff('rc', [ [ $rc->{truth}, 1 ] ], 'recount of everything: after');
is(dead_letters('rc'), $rc_t->{rejected}, 'recount of everything: no dead letter written twice');

# By a time (see the header: the mock broker resolves every time to the end).
my $id3 = sql(q{SELECT adstream.rewind_source('rc', to_time => now() - interval '1 hour', partitions => '{1,3}')});
is(sql("SELECT string_agg(partition || ':' || (from_offset = to_offset) || ':' || replaying, ' ' ORDER BY partition) FROM adstream.rewind_status WHERE rewind_id = $id3"),
	'1:true:false 3:true:false', 'recount by time: the brokers\' answer is used (the mock\'s: the end, nothing to replay)');
counts_diff('rc', [ [ $rc->{truth}, 1 ] ], 'recount by time: after');

# ---- 5. refusals ------------------------------------------------------------
like(sql_error(qq{SELECT adstream.rewind_source('rc', to_offsets => '{"0": 999999}')}),
	qr/partition 0 of source "rc" would move forward.*HINT:/s, 'a forward rewind is refused');
like(sql_error(q{SELECT adstream.rewind_source('rc', to_offsets => '{"9": 0}')}),
	qr/source "rc" has no stored offset of partition 9.*HINT:/s, 'an unknown partition is refused');
like(sql_error(q{SELECT adstream.rewind_source('rc', to_offsets => '{"0": 0}', to_time => now())}),
	qr/give exactly one of to_time and to_offsets/, 'a recount takes a time or offsets, not both');
like(sql_error(q{SELECT adstream.rewind_source('rc')}),
	qr/give exactly one of to_time and to_offsets/, 'a recount needs a time or offsets');
like(sql_error(q{SELECT adstream.rewind_source('rc', to_offsets => '{"0": -1}')}),
	qr/is not a partition and an offset/, 'a negative offset is refused');
like(sql_error(q{SELECT adstream.rewind_source('rc', to_time => now(), mode => 'rewrite')}),
	qr/unknown rewind mode "rewrite".*HINT:/s, 'an unknown mode is refused');
like(sql_error(q{SELECT adstream.rewind_source('rc', to_time => date_bin('1 hour', now(), '1970-01-01 00:00+00') - interval '90 minutes', window_end => date_bin('1 hour', now(), '1970-01-01 00:00+00'), mode => 'replace')}),
	qr/must be whole UTC hours/, 'a replaced window must be on the hour');
like(sql_error(q{SELECT adstream.rewind_source('rc', to_time => date_bin('1 hour', now(), '1970-01-01 00:00+00') - interval '1 hour', window_end => date_bin('1 hour', now(), '1970-01-01 00:00+00'), mode => 'replace', partitions => '{0}')}),
	qr/a replace rewinds every partition/, 'a replace of some partitions is refused');
like(sql_error(q{SELECT adstream.rewind_source('nope', to_time => now())}), qr/source "nope" does not exist/,
	'an unknown source is refused');
sql("SELECT adstream.create_source('ord', '$bootstrap', 'ord', 'orders')");
like(sql_error(q{SELECT adstream.rewind_source('ord', to_time => date_bin('1 hour', now(), '1970-01-01 00:00+00') - interval '1 hour', window_end => date_bin('1 hour', now(), '1970-01-01 00:00+00'), mode => 'replace')}),
	qr/source "ord" consumes orders: only a recount can rewind it.*HINT:/s, 'a replace of an orders source is refused, with a hint');
# Brokers that do not answer: the time cannot be resolved, nothing changes.
{
	my $rewinds = sql('SELECT count(*) FROM adstream.rewinds');
	$broker->cmd('down all');
	my $t0 = time();
	like(sql_error(q{SELECT adstream.rewind_source('rc', to_time => now() - interval '1 hour')}),
		qr/the brokers of topic "rc" did not say which offsets the time falls on.*HINT:  Check that the brokers are reachable/s,
		'brokers that do not answer: a rewind by time fails, with a hint');
	cmp_ok(time() - $t0, '<', 30, 'brokers that do not answer: the call gives up after its time limit');
	$broker->cmd('up all');
	is(sql('SELECT count(*) FROM adstream.rewinds'), $rewinds, 'brokers that do not answer: no rewind was recorded');
}

# An orders source recounts: orders are deduplicated for ever by order_id, so
# a replay stores nothing twice.
{
	my $order = sub {
		my ($n) = @_;
		return sprintf('{"order_id":"00000000-0000-4000-8000-%012d","user_id":%d,"store_id":1,"amount":"%d.50","currency":"EUR","ts":%d}',
			$n, $n, $n, $now0_ms - 600_000 + $n);
	};
	AdstreamTest::replay($broker, 'ord', [ map({ [ 0, $order->($_) ] } 1 .. 6), [ 0, $order->(3) ], [ 0, '{"order_id": 1}' ] ]);
	AdstreamTest::wait_consumed($node, 'ord', 8);
	my $orders = sql(q{SELECT string_agg(order_id::text, ',' ORDER BY order_id) FROM adstream.orders WHERE source = 'ord'});
	my $oid = sql(q{SELECT adstream.rewind_source('ord', to_offsets => '{"0": 0}')});
	wait_rewind($oid);
	is(sql("SELECT replayed || ' ' || accepted || ' ' || duplicates || ' ' || rejected FROM adstream.rewind_status WHERE rewind_id = $oid"),
		'8 0 7 1', 'orders recount: the six orders and the copy are duplicates, the bad one rejected again');
	is(sql(q{SELECT string_agg(order_id::text, ',' ORDER BY order_id) FROM adstream.orders WHERE source = 'ord'}), $orders,
		'orders recount: the orders stored are the same');
	is(dead_letters('ord'), 1, 'orders recount: no dead letter written twice');
	is(counters('ord'), '6/1/1', 'orders recount: the partition\'s counters did not move');
}

# A partition still replaying takes no second rewind: pause the source, so that the first one waits.
sql(q{SELECT adstream.pause_source('rc')});
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM adstream.worker_status() w JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'rc' AND w.pid IS NOT NULL")
  or die 'rc did not pause';
my $id4 = sql(q{SELECT adstream.rewind_source('rc', to_offsets => '{"2": 0}')});
is(sql("SELECT replaying || ' ' || remaining FROM adstream.rewind_status WHERE rewind_id = $id4"), "true $stored{2}",
	'a paused source\'s rewind waits, with what remains');
like(sql_error(q{SELECT adstream.rewind_source('rc', to_offsets => '{"2": 0}')}),
	qr/partition 2 of source "rc" is still being replayed.*HINT:/s, 'a partition still replaying takes no second rewind');
sql(q{SELECT adstream.resume_source('rc')});
wait_rewind($id4);
counts_diff('rc', [ [ $rc->{truth}, 1 ] ], 'after the resumed rewind');

# ---- 4. a kill -9 in the middle of a replay ---------------------------------
# The replay of partitions 0 and 2 (worker 1/2) commits and finishes; the
# worker of 1 and 3 is held at its first commit by a lock on partition 3's
# rewind row, and is then killed: the crash cuts the replay in the middle.
sql(q{SELECT adstream.pause_source('rc')});
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM adstream.worker_status() w JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'rc' AND w.pid IS NOT NULL")
  or die 'rc did not pause';
my $id5 = sql(q{SELECT adstream.rewind_source('rc', to_offsets => '{"0": 0, "1": 0, "2": 0, "3": 0}')});
my ($in, $out) = ('', '');
my $blocker = IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres') ], '<', \$in, '>', \$out, '2>', \$out);
$in .= "BEGIN;\nSELECT 1 FROM adstream.rewind_partitions WHERE rewind_id = $id5 AND partition = 3 FOR UPDATE;\nSELECT 'locked';\n";
$blocker->pump until $out =~ /locked/;
sql(q{SELECT adstream.resume_source('rc')});
$node->poll_query_until('postgres', qq{
SELECT (SELECT string_agg(partition || ':' || replaying, ' ' ORDER BY partition) FROM adstream.rewind_status
         WHERE rewind_id = $id5 AND partition <> 1) = '0:false 2:false 3:true'
   AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'adstream consumer rc 2/2' AND wait_event_type = 'Lock')})
  or die 'the replay did not get half-way: ' . sql("SELECT * FROM adstream.rewind_status WHERE rewind_id = $id5");
pass('kill -9: partitions 0 and 2 have finished their replay, a batch of partition 3 waits at its commit');
my $victim = sql(q{SELECT pid FROM pg_stat_activity WHERE application_name = 'adstream consumer rc 2/2'});
my $loaded = () = slurp_file($node->logfile) =~ /\(rewind $id5, recount\)/g;
kill 'KILL', $victim;
note "killed worker $victim";
$in .= "\\q\n";
eval { $blocker->finish; };
wait_rewind($id5);
my $reloaded = () = slurp_file($node->logfile) =~ /\(rewind $id5, recount\)/g;
cmp_ok($reloaded, '>', $loaded, 'kill -9: after the restart the replay of partition 3 is taken up again');
is(rw($id5, 'replayed'), $rc->{sent}, 'kill -9: every message replayed exactly once');
is(rw($id5, 'duplicates'), $rc_t->{valid}, 'kill -9: the duplicates are the valid messages');
counts_diff('rc', [ [ $rc->{truth}, 1 ] ], 'kill -9 in a replay');
is(counters('rc'), $rc_counters, 'kill -9: the partitions\' counters did not move');
is(dead_letters('rc'), $rc_t->{rejected}, 'kill -9: no dead letter written twice');
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'the kill -9 really crashed a worker');

# ---- 2. recount outside the horizon -------------------------------------------
# An old load (5 hours ago), then a recent one; expiry gives up the old
# hours (a 1-hour horizon behind the recent watermark); a replay of
# everything counts the old load again and the recent one not at all.
sql("SELECT adstream.create_source('old', '$bootstrap', 'old')");
my $now_ms = int(time() * 1000);
my $a = AdstreamTest::loadgen($broker, topic => 'old', count => 6000, seed => 2302,
	start_ms => $now_ms - 5 * 3600 * 1000, args => [ '--late-ratio', 0, '--span-s', 300 ]);
my $b = AdstreamTest::loadgen($broker, topic => 'old', count => 6000, seed => 2303,
	start_ms => $now_ms - 30 * 60 * 1000, args => [ '--late-ratio', 0, '--span-s', 300 ]);
my ($a_t, $b_t) = (totals($a->{truth}), totals($b->{truth}));
AdstreamTest::wait_consumed($node, 'old', $a->{sent} + $b->{sent});
counts_diff('old', [ [ $a->{truth}, 1 ], [ $b->{truth}, 1 ] ], 'outside the horizon: before');
# Expiry needs every partition's end as its worker reports it.
$node->poll_query_until('postgres', q{
SELECT adstream.expire_dedup_state() IS NOT NULL
   AND (SELECT dedup_expired_before > now() - interval '4 hours' FROM adstream.sources WHERE name = 'old')})
  or die 'expiry did not give up the old hours: ' . sql("SELECT dedup_expired_before FROM adstream.sources WHERE name = 'old'");
ok(sql(qq{SELECT dedup_expired_before <= to_timestamp(($now_ms - 30 * 60 * 1000 - 2000) / 1000.0) FROM adstream.sources WHERE name = 'old'}) eq 't',
	'outside the horizon: the recent load\'s hours are still remembered');
my $old_counters = counters('old');
my $id6 = sql(q{SELECT adstream.rewind_source('old', to_offsets => '{"0": 0, "1": 0}')});
wait_rewind($id6);
is(rw($id6, 'replayed'), $a->{sent} + $b->{sent}, 'outside the horizon: everything replayed once');
is(rw($id6, 'accepted'), $a_t->{unique}, 'outside the horizon: the old load\'s distinct events counted again, once each');
is(rw($id6, 'duplicates'), $a_t->{duplicates} + $b_t->{valid},
	'outside the horizon: the old load\'s copies and the whole recent load are duplicates');
is(rw($id6, 'rejected'), $a_t->{rejected} + $b_t->{rejected}, 'outside the horizon: the rejected are rejected again');
counts_diff('old', [ [ $a->{truth}, 2 ], [ $b->{truth}, 1 ] ], 'outside the horizon: truth(old) x 2 + truth(recent)');
is(counters('old'), $old_counters, 'outside the horizon: the partitions\' counters did not move');
is(dead_letters('old'), $a_t->{rejected} + $b_t->{rejected}, 'outside the horizon: no dead letter written twice');
is(sql("SELECT count(*) FROM adstream.rewind_ids WHERE rewind_id = $id6"), 0, 'outside the horizon: the rewind\'s id set is gone once it finished');

# ---- 3. replace a window, after a field-mapping fix ---------------------------
# Two loads, one in each of two event-time hours; counted first with ad_id
# and campaign_id swapped by a wrong mapping.
sql(q{SELECT adstream.create_sink('pinot', '} . $bootstrap . q{')});
sql("SELECT adstream.create_source('rp', '$bootstrap', 'rp', options => '{\"workers\": 2, \"fields\": {\"ad_id\": \"campaign_id\", \"campaign_id\": \"ad_id\"}}')");
my $h0_ms = (floor($now_ms / 3600000) - 3) * 3600000;
my $r1 = AdstreamTest::loadgen($broker, topic => 'rp', count => 8000, seed => 2304,
	start_ms => $h0_ms + 10 * 60 * 1000, args => [ '--late-ratio', 0, '--span-s', 600 ]);
my $r2 = AdstreamTest::loadgen($broker, topic => 'rp', count => 8000, seed => 2305,
	start_ms => $h0_ms + 70 * 60 * 1000, args => [ '--late-ratio', 0, '--span-s', 600 ]);
my $r2_t = totals($r2->{truth});
AdstreamTest::wait_consumed($node, 'rp', $r1->{sent} + $r2->{sent});
counts_diff('rp', [ [ $r1->{truth}, 1, 1 ], [ $r2->{truth}, 1, 1 ] ], 'replace: before, counted with the wrong mapping');
AdstreamTest::wait_published($node);

is(sql(q{SELECT adstream.alter_source('rp', '{"fields": null}')}), 't', 'replace: the mapping is fixed with alter_source');
# The clicks kept for attribution (an orders source exists): the window's were kept swapped.
my $kept_sql = qq{SELECT count(*) || ' ' || count(DISTINCT e.event_id) FROM adstream.ad_events e JOIN adstream.sources s ON s.id = e.source_id
  WHERE s.name = 'rp' AND e.ts >= to_timestamp($h0_ms / 1000.0) + interval '1 hour' AND e.ts < to_timestamp($h0_ms / 1000.0) + interval '2 hours'};
my $kept = sql($kept_sql);
like($kept, qr/^(\d+) \1$/, "replace: the window's clicks were kept for attribution ($kept)");
my $unlike_truth_sql = qq{
CREATE TEMP TABLE t2 (line text);
COPY t2 FROM '$r2->{truth}';
SELECT count(*) FROM adstream.ad_events e JOIN adstream.sources s ON s.id = e.source_id
 WHERE s.name = 'rp' AND e.ts >= to_timestamp($h0_ms / 1000.0) + interval '1 hour' AND e.ts < to_timestamp($h0_ms / 1000.0) + interval '2 hours'
   AND NOT EXISTS (SELECT 1 FROM t2 WHERE t2.line LIKE 'minute,' || e.ad_id || ',' || e.campaign_id || ',%')};
cmp_ok(sql($unlike_truth_sql), '>', 0, 'replace: as the wrong mapping read them (ad and campaign swapped)');
# By time, the mock broker places every partition's offset at its end: the
# window would be removed and never counted again, so the call is refused.
my $before_refused = sql(q{SELECT sum(impressions + clicks) FROM adstream.ad_stats_minute m JOIN adstream.sources s ON s.id = m.source_id WHERE s.name = 'rp'});
like(sql_error(qq{SELECT adstream.rewind_source('rp', mode => 'replace',
	to_time => to_timestamp($h0_ms / 1000.0) + interval '1 hour', window_end => to_timestamp($h0_ms / 1000.0) + interval '2 hours')}),
	qr/the brokers place no message of source "rp" .* yet \d+ events of the window were counted.*HINT:  Raise lookback/s,
	'replace by a time the brokers place after every counted message is refused');
is(sql(q{SELECT sum(impressions + clicks) FROM adstream.ad_stats_minute m JOIN adstream.sources s ON s.id = m.source_id WHERE s.name = 'rp'}),
	$before_refused, 'and removes nothing');
my $removed = sql(qq{SELECT sum(impressions + clicks) FROM adstream.ad_stats_minute m JOIN adstream.sources s ON s.id = m.source_id
  WHERE s.name = 'rp' AND window_start >= to_timestamp($h0_ms / 1000.0) + interval '1 hour' AND window_start < to_timestamp($h0_ms / 1000.0) + interval '2 hours'});
my $id7 = sql(qq{SELECT adstream.rewind_source('rp', mode => 'replace',
	to_time => to_timestamp($h0_ms / 1000.0) + interval '1 hour', window_end => to_timestamp($h0_ms / 1000.0) + interval '2 hours',
	to_offsets => '{"0": 0, "1": 0, "2": 0, "3": 0}')});
is(sql("SELECT removed_events FROM adstream.rewinds WHERE id = $id7"), $removed,
	"replace: the window's $removed counted events were removed first");
is(sql("SELECT forgotten_ids FROM adstream.rewinds WHERE id = $id7"), $r2_t->{unique},
	'replace: the window\'s dedup ids were forgotten (one per distinct event)');
wait_rewind($id7);
is(rw($id7, 'replayed'), $r1->{sent} + $r2->{sent}, 'replace: every message replayed once');
is(rw($id7, 'accepted'), $r2_t->{unique}, 'replace: the window\'s distinct events counted afresh');
is(rw($id7, 'duplicates'), $r2_t->{duplicates}, 'replace: their copies are duplicates');
my $r1_t = totals($r1->{truth});
is(rw($id7, 'skipped'), $r1_t->{valid}, 'replace: the events outside the window (the first hour\'s) are skipped');
counts_diff('rp', [ [ $r1->{truth}, 1, 1 ], [ $r2->{truth}, 1, 0 ] ],
	'replace: the window equals the truth, the other hour keeps its old result');
is(sql($kept_sql), $kept, 'replace: the window\'s clicks are kept again, each once');
is(sql($unlike_truth_sql), 0, 'replace: as the fixed mapping reads them (every ad and campaign as in the truth)');
AdstreamTest::wait_published($node);
pinot_stats('replace: Pinot');

$node->stop;
$broker->stop;
done_testing();
