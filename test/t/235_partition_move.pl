# Moving partitions between running nodes (issue #13, part 3).
#
# Three nodes on a topic of ad events and one of orders, 48 partitions each:
# A consumes 0-23, B 24-47, C nothing yet; each publishes to the region's
# Kafka under its own name.  A first stream (clicks and orders, all valid,
# dumped) is consumed; its orders wait for the ad-events watermark.  While a
# second stream runs (impressions only, with duplicates, moving the
# watermark up), partitions 0-15 move from A to C: export on A, the copy with
# psql's COPY, import on C; then C's consumer is killed (kill -9) right after
# the import.  The first stream's records of those partitions are sent again
# after the move: every one of them is a duplicate on C (events counted on
# A, orders judged on A or waiting ones moved to C).  The nodes' aggregates,
# dead letters, counters, orders and credits, added up, equal the ground
# truth, and so does the region's topic read with Pinot's upsert rule and
# summed over the nodes.  Refusals: a partition the node does not consume,
# an import by the exporting node, a second import of one handoff.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my $src = AdstreamTest::Broker->start(topics => [ 'ads:48', 'orders:48' ]);
my $region = AdstreamTest::Broker->start(topics => AdstreamTest::pinot_topics());
my %share = (A => '0-23', B => '24-47');
my %node;
for my $name (qw(A B C))
{
	my $node = AdstreamTest::node($name, 'adstream.batch_max_messages' => 500,
		'adstream.attribution_max_wait' => "'30s'");
	$node->safe_psql('postgres', "SELECT adstream.set_node_name('$name')");
	$node->safe_psql('postgres', "SELECT adstream.create_sink('pinot', '$region->{bootstrap}')");
	if ($share{$name})
	{
		$node->safe_psql('postgres', "SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads',
			options => '{\"partitions\": \"$share{$name}\", \"workers\": 2}')");
		$node->safe_psql('postgres', "SELECT adstream.create_source('shop', '$src->{bootstrap}', 'orders', 'orders',
			options => '{\"partitions\": \"$share{$name}\"}')");
	}
	$node{$name} = $node;
}
my ($A, $B, $C) = @node{qw(A B C)};

sub wait_all_consumed { AdstreamTest::wait_consumed_over([ values %node ], @_); }

# 1. Clicks and orders, all valid, every record dumped to be sent again.
my $dir = PostgreSQL::Test::Utils::tempdir();
my $run1 = AdstreamTest::loadgen($src, topic => 'ads', count => AdstreamTest::scaled(12000), seed => 81,
	args => [ '--co-partition', '--users', 20000, '--stores', 50, '--bad-ratio', 0, '--future-ratio', 0,
		'--orders-topic', 'orders', '--orders', 3000, '--orders-bad-ratio', 0, '--dump', "$dir/run1.dump" ]);
my ($orders_sent) = ${ $run1->{out} } =~ /orders_sent=(\d+)/;
wait_all_consumed('ads', $run1->{sent});
wait_all_consumed('shop', $orders_sent);

# 2. A second stream, impressions only (its records change no credit), with
# duplicates, over the next ten minutes of event time: the watermark climbs
# past the orders' times while it runs.
my $run2 = AdstreamTest::loadgen($src, topic => 'ads', count => AdstreamTest::scaled(24000), seed => 82, background => 1,
	start_ms => $AdstreamTest::START_MS + 600_000,
	args => [ '--rate', 5000, '--co-partition', '--users', 20000, '--stores', 50, '--click-ratio', 0 ]);
my $a_before = $A->safe_psql('postgres', "SELECT sum(next_offset) FROM adstream.offsets WHERE source = 'ads'");
$A->poll_query_until('postgres',
	"SELECT sum(next_offset) >= $a_before + 2000 FROM adstream.offsets WHERE source = 'ads'") or die;

# 3. The move, mid-stream.
my ($ret, $out, $err) = $A->psql('postgres', "SELECT adstream.export_partitions('20-30')");
like($err, qr/partitions 24,25,26,27,28,29,30 are not consumed by this node/,
	'A refuses to export partitions it does not consume');
my $waiting = $A->safe_psql('postgres', "SELECT count(*) FROM adstream.orders WHERE status = 'waiting' AND partition < 16");
# The export's transaction stays open for a second after the export: the
# batches A's consumers start meanwhile wait for it (the expiry lock), then
# find the moved partitions' offsets gone and roll back (the fence).
my ($hid, $t_export) = split /\|/, $A->safe_psql('postgres', q{
BEGIN;
SELECT adstream.export_partitions('0-15') || '|' || extract(epoch FROM clock_timestamp() - now());
SELECT pg_sleep(1);
COMMIT;});
$t_export =~ s/\s+$//;
ok($hid > 0, "A exported partitions 0-15 as handoff $hid");
my $moved = $A->safe_psql('postgres', "SELECT coalesce((items->>'order')::int, 0) FROM adstream.handoff_status WHERE handoff_id = $hid");
note "waiting orders of partitions 0-15 on A just before the export: $waiting; moved: $moved";
ok($moved > 0, "the handoff carries $moved waiting orders");
is($A->safe_psql('postgres', "SELECT count(*) FROM adstream.orders WHERE status = 'waiting' AND partition < 16"), '0',
	'A keeps no waiting order of the moved partitions');
is($A->safe_psql('postgres', "SELECT string_agg(name || ':' || array_to_string(partitions, ','), ' ' ORDER BY name) FROM adstream.sources"),
	'ads:' . join(',', 16 .. 23) . ' shop:' . join(',', 16 .. 23), 'A keeps partitions 16-23');

sub copy_handoff
{
	my ($from, $to, $id, $db) = @_;
	my ($e1, $e2) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $from->connstr('postgres'), '-c',
			"COPY (SELECT * FROM adstream.handoff_data($id)) TO STDOUT" ], '2>', \$e1, '|',
		[ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $to->connstr($db // 'postgres'), '-c',
			'COPY adstream.handoff_in FROM STDIN' ], '>', \my $o, '2>', \$e2)
	  or die "copying handoff $id failed: $e1 $e2";
}
my $t0 = Time::HiRes::time();
copy_handoff($A, $C, $hid);
my $t_copy = Time::HiRes::time() - $t0;
is($C->safe_psql('postgres', "SELECT state FROM adstream.handoff_status WHERE handoff_id = $hid"), 'copied',
	'C shows the copy as copied');
($ret, $out, $err) = $A->psql('postgres', "SELECT adstream.import_partitions('A', $hid)");
like($err, qr/cannot be imported by the node that exported it/, 'A refuses to import its own handoff');
$t0 = Time::HiRes::time();
is($C->safe_psql('postgres', "SELECT adstream.import_partitions('A', $hid)"), '{' . join(',', 0 .. 15) . '}',
	'C imported partitions 0-15');
note sprintf('export %.3f s, copy %.3f s, import %.3f s; the handoff: %s', $t_export, $t_copy,
	Time::HiRes::time() - $t0, $C->safe_psql('postgres', "SELECT items FROM adstream.handoff_status WHERE handoff_id = $hid"));

my $fenced = () = slurp_file($A->logfile) =~ /offsets of source "ads" moved under this worker/g;
ok($fenced > 0, "$fenced batches of A that waited for the export were fenced (rolled back, read again by C)");

# kill -9 of C's consumer right after the import: crash recovery, the dedup
# index rebuilt from dedup_log, the workers from the imported offsets.
$C->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM adstream.worker_status() w JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'ads' AND w.pid IS NOT NULL")
  or die;
my ($pid) = AdstreamTest::worker_pids($C, 'ads');
kill 'KILL', $pid;
note "killed C's consumer $pid";
$C->poll_query_until('postgres', "SELECT count(*) > 0 AND bool_and(w.pid <> $pid) FROM adstream.worker_status() w "
	  . "JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'ads' AND w.pid IS NOT NULL")
  or die 'C did not come back after the kill';

copy_handoff($A, $C, $hid);
($ret, $out, $err) = $C->psql('postgres', "SELECT adstream.import_partitions('A', $hid)");
like($err, qr/handoff $hid of node "A" was already imported/, 'a second import of the handoff is refused');
$C->safe_psql('postgres', "DELETE FROM adstream.handoff_in WHERE from_node = 'A' AND handoff_id = $hid");
# In another database than the workers', an import would rebuild their
# dedup index for that database's dedup_log: refused.
$C->safe_psql('postgres', 'CREATE DATABASE other');
$C->safe_psql('other', "SET client_min_messages = error; CREATE EXTENSION adstream; SELECT adstream.set_node_name('C')");
copy_handoff($A, $C, $hid, 'other');
($ret, $out, $err) = $C->psql('other', "SELECT adstream.import_partitions('A', $hid)");
like($err, qr/adstream's dedup index holds the event ids of another database/,
	"an import outside adstream.database is refused, the workers' dedup index untouched");
is($C->safe_psql('postgres', "SELECT state FROM adstream.handoff_status WHERE handoff_id = $hid"), 'imported',
	'C shows the handoff as imported');
my $handed4 = $A->safe_psql('postgres', "SELECT d.data->>'next_offset' FROM adstream.handoff_data($hid) d "
	  . "WHERE d.item = 'offset' AND d.source = 'ads' AND (d.data->>'partition')::int = 4");
$A->safe_psql('postgres', "SELECT adstream.confirm_handoff($hid)");
is($A->safe_psql('postgres', "SELECT state || ':' || (SELECT count(*) FROM adstream.handoff_items) FROM adstream.handoff_status WHERE handoff_id = $hid"),
	'confirmed:0', 'A confirmed the handoff and dropped its data');

AdstreamTest::finish_loadgen($run2);

# 4. The first stream's records of partitions 0-15 again: duplicates on C of
# events A counted and of orders A judged or handed over.
my (@events, @orders);
open(my $fh, '<:raw', "$dir/run1.dump") or die;
while (my $h = <$fh>)
{
	my ($is_order, $p, $kl, $vl) = $h =~ /^(orders )?(\d+) (-?\d+) (\d+)\n$/ or die "bad dump line $h";
	my $rec;
	read($fh, $rec, ($kl > 0 ? $kl : 0) + $vl + 1) == ($kl > 0 ? $kl : 0) + $vl + 1 or die;
	my $key = $kl >= 0 ? substr($rec, 0, $kl) : undef;
	my $val = substr($rec, $kl > 0 ? $kl : 0, $vl);
	next if $p > 15;
	push @{ $is_order ? \@orders : \@events }, [ $p, $val, $key ];
}
close($fh);
my $replayed = AdstreamTest::replay($src, 'ads', \@events);
my $replayed_orders = AdstreamTest::replay($src, 'orders', \@orders);
note "sent again: $replayed events, $replayed_orders orders";
wait_all_consumed('ads', $run1->{sent} + $run2->{sent} + $replayed);
wait_all_consumed('shop', $orders_sent + $replayed_orders);
$_->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die for values %node;
AdstreamTest::wait_published($_) for values %node;

for my $n ([ $A, '16|23|8' ], [ $B, '24|47|24' ], [ $C, '0|15|16' ])
{
	is($n->[0]->safe_psql('postgres', 'SELECT string_agg(DISTINCT min || \'|\' || max || \'|\' || n, \',\') FROM '
			. '(SELECT min(partition), max(partition), count(*) AS n FROM adstream.offsets GROUP BY source) s'),
		$n->[1], 'node ' . $n->[0]->name . " holds the offsets of exactly its partitions of both topics");
	is($n->[0]->safe_psql('postgres', "SELECT string_agg(DISTINCT coalesce(last_error, ''), ',') FROM adstream.source_status"),
		'', 'node ' . $n->[0]->name . ' reports no error (no overlap seen)');
}

# 5. The nodes' results, added up, against the truth; the region's topics
# read as Pinot does, summed over nodes.
my $load = '';
for my $name (sort keys %node)
{
	my $f = "$dir/$name";
	my $n = $node{$name};
	# an empty result is an empty file (a lone newline would be an empty row)
	my $rows = sub { my $out = $_[0]; return $out eq '' ? '' : "$out\n" };
	PostgreSQL::Test::Utils::append_to_file("$f.min", $rows->($n->safe_psql('postgres',
		"COPY (SELECT adstream.node_name(), ad_id, max(campaign_id), window_start, sum(impressions), sum(clicks) "
		  . "FROM adstream.ad_stats_minute GROUP BY ad_id, window_start) TO STDOUT")));	# over the workers' stripes
	PostgreSQL::Test::Utils::append_to_file("$f.rej", $rows->($n->safe_psql('postgres',
		"COPY (SELECT source, reason FROM adstream.rejected_events) TO STDOUT")));
	PostgreSQL::Test::Utils::append_to_file("$f.acc", $rows->($n->safe_psql('postgres',
		"COPY (SELECT coalesce(sum(accepted), 0), coalesce(sum(duplicates), 0) FROM adstream.offsets WHERE source = 'ads') TO STDOUT")));
	PostgreSQL::Test::Utils::append_to_file("$f.ord", $rows->($n->safe_psql('postgres', q{
COPY (SELECT order_id, ad_id, campaign_id, event_id, (extract(epoch FROM event_ts) * 1000)::bigint,
             (extract(epoch FROM ts) * 1000)::bigint, amount, currency FROM adstream.orders) TO STDOUT})));
	PostgreSQL::Test::Utils::append_to_file("$f.att", $rows->($n->safe_psql('postgres',
		"COPY (SELECT order_id, ad_id, click_event_id, amount, record_uuid FROM adstream.attributed_orders) TO STDOUT")));
	$load .= "COPY all_min FROM '$f.min'; COPY all_rej FROM '$f.rej'; COPY all_acc FROM '$f.acc'; "
	  . "COPY all_orders FROM '$f.ord'; COPY all_att FROM '$f.att';\n";
}
for my $topic ('adstream.ad_stats', 'adstream.attributed_orders')
{
	my $t = $topic eq 'adstream.ad_stats' ? 'pinot_raw' : 'pinot_orders_raw';
	IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $region->{bootstrap},
			'--topic', $topic ], '>', "$dir/$t", '2>', "$dir/$t.err")
	  or die 'upsert reader failed: ' . slurp_file("$dir/$t.err");
	$load .= "COPY $t (j) FROM '$dir/$t' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02');\n";
}
my $res = $B->safe_psql('postgres', AdstreamTest::truth_sql([ $run1->{truth}, $run2->{truth} ]) . qq{
CREATE TEMP TABLE all_min (node text, ad_id bigint, campaign_id bigint, window_start timestamptz, impressions bigint, clicks bigint);
CREATE TEMP TABLE all_rej (source text, reason text);
CREATE TEMP TABLE all_acc (n bigint, d bigint);
CREATE TEMP TABLE all_orders (order_id uuid, ad_id bigint, campaign_id bigint, event_id uuid, event_ms bigint,
                              order_ms bigint, amount numeric, currency text);
CREATE TEMP TABLE all_att (order_id uuid, ad_id bigint, click_event_id uuid, amount numeric, record_uuid uuid);
CREATE TEMP TABLE pinot_raw (j jsonb);
CREATE TEMP TABLE pinot_orders_raw (j jsonb);
$load
CREATE TEMP VIEW got_min AS
  SELECT ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM all_min GROUP BY ad_id, window_start;
CREATE TEMP VIEW truth_rej AS
  SELECT split_part(line, ',', 2) AS reason, sum(split_part(line, ',', 3)::bigint) AS n
    FROM truth_raw WHERE line LIKE 'reject,%' GROUP BY 1;
CREATE TEMP VIEW got_rej AS SELECT reason, count(*)::numeric AS n FROM all_rej WHERE source = 'ads' GROUP BY 1;
CREATE TEMP VIEW truth_att AS
  SELECT order_id, ad_id, event_id AS click_event_id, amount FROM truth_orders WHERE event_id IS NOT NULL;
CREATE TEMP VIEW pinot_att AS
  SELECT (j->>'order_id')::uuid AS order_id, (j->>'ad_id')::bigint AS ad_id,
         (j->>'click_event_id')::uuid AS click_event_id, (j->>'amount')::numeric AS amount
    FROM pinot_orders_raw;
CREATE TEMP VIEW pinot AS
  SELECT j->>'node' AS node, (j->>'ad_id')::bigint AS ad_id, (j->>'campaign_id')::bigint AS campaign_id,
         to_timestamp((j->>'window_start')::bigint / 1000.0) AS window_start,
         (j->>'impressions')::bigint AS impressions, (j->>'clicks')::bigint AS clicks
    FROM pinot_raw;
CREATE TEMP VIEW pinot_sum AS
  SELECT ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM pinot GROUP BY ad_id, window_start;
SELECT (SELECT count(*) FROM truth_min),
       (SELECT count(*) FROM ((TABLE truth_min EXCEPT TABLE got_min) UNION ALL (TABLE got_min EXCEPT TABLE truth_min)) d),
       (SELECT count(*) FROM ((TABLE truth_rej EXCEPT TABLE got_rej) UNION ALL (TABLE got_rej EXCEPT TABLE truth_rej)) d),
       (SELECT sum(n) FROM all_acc) || ':' || (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,unique,%'),
       (SELECT sum(d) FROM all_acc) || ':' || (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,duplicates,%'),
       (SELECT count(*) FROM truth_orders) || ':' || (SELECT count(*) FROM truth_att) || ':'
       || (SELECT count(*) FROM ((TABLE truth_orders EXCEPT TABLE all_orders) UNION ALL (TABLE all_orders EXCEPT TABLE truth_orders)) d) || ':'
       || (SELECT count(*) - count(DISTINCT order_id) FROM all_orders) || ':'
       || (SELECT count(*) FROM ((TABLE truth_att EXCEPT SELECT order_id, ad_id, click_event_id, amount FROM all_att)
                                 UNION ALL (SELECT order_id, ad_id, click_event_id, amount FROM all_att EXCEPT TABLE truth_att)) d) || ':'
       || (SELECT count(*) - count(DISTINCT order_id) FROM all_att),
       (SELECT count(*) FROM ((SELECT order_id, ad_id, click_event_id, amount FROM pinot_att EXCEPT TABLE truth_att)
			 UNION ALL (TABLE truth_att EXCEPT SELECT order_id, ad_id, click_event_id, amount FROM pinot_att)) d),
       (SELECT count(*) FROM ((SELECT ad_id, campaign_id, window_start, impressions, clicks FROM pinot_sum EXCEPT TABLE truth_min)
			 UNION ALL (TABLE truth_min EXCEPT SELECT ad_id, campaign_id, window_start, impressions, clicks FROM pinot_sum)) d)
		|| ':' || (SELECT count(*) FROM
			((SELECT node, ad_id, window_start, impressions, clicks FROM pinot
			  EXCEPT SELECT node, ad_id, window_start, impressions, clicks FROM all_min)
			 UNION ALL (SELECT node, ad_id, window_start, impressions, clicks FROM all_min
			  EXCEPT SELECT node, ad_id, window_start, impressions, clicks FROM pinot)) d)
		|| ':' || (SELECT string_agg(DISTINCT node, ',' ORDER BY node) FROM pinot);
});
my ($rows, $min_diff, $rej_diff, $acc, $dups, $orders, $pinot_orders, $pinot) = split /\|/, $res;
ok($rows > 1000, "the truth has $rows (ad, minute) rows");
is($min_diff, 0, 'every (ad, minute) count, added up over the nodes, equals the ground truth');
is($rej_diff, 0, 'dead letters per reason, over the nodes, equal the ground truth');
my ($acc_got, $acc_want) = split /:/, $acc;
is($acc_got, $acc_want, 'accepted events over the nodes equal distinct valid events');
my ($dup_got, $dup_want) = split /:/, $dups;
is($dup_got, $dup_want + $replayed, "duplicates over the nodes: the stream's and the $replayed events sent again");
like($orders, qr/^\d+:\d+:0:0:0:0$/,
	"orders ($orders: truth, credited; then differences in orders, orders on two nodes, differences in credits, "
	  . 'orders credited twice): every order judged once, as the truth says');
is($pinot_orders, 0, "the region's attributed_orders topic, read as Pinot does, equals the truth");
is($pinot, '0:0:A,B,C',
	"the region's topic, read with Pinot's upsert rule, holds each node's rows, and summed over the nodes equals the truth");
like(slurp_file($C->logfile), qr/\(PID $pid\) was terminated by signal 9.*dedup index rebuilt from adstream\.dedup_log/s,
	"C's consumer was killed, and C rebuilt its dedup index (with the imported ids) after the crash");

# 6. Overlap detection after the move.  A late commit of A (a commit
# librdkafka delivers after a broker outage, or a stuck old worker's) names
# A at or below the offset A handed over: the previous owner's, C goes on.
# A commit of A above it means A consumes the partition again: C stops it.
my $a_tag = $A->safe_psql('postgres', "SELECT 'adstream node ' || adstream.node_name() || ' ' || adstream._origin()");
my $group = $C->safe_psql('postgres', "SELECT group_id FROM adstream.sources WHERE name = 'ads'");
sub group_commit
{
	my ($offset) = @_;
	my $e = '';
	IPC::Run::run([ "$AdstreamTest::BIN/adstream-group-commit", '--brokers', $src->{bootstrap}, '--group', $group,
			'--topic', 'ads', '--partition', 4, '--offset', $offset, '--metadata', $a_tag ], '2>', \$e)
	  or die "group commit failed: $e";
}
group_commit($handed4);
sleep 3;						# more than one check (every 2 s) of C's consumer
group_commit($handed4 - 1);
sleep 3;
is($C->safe_psql('postgres', "SELECT string_agg(DISTINCT coalesce(last_error, ''), ',') FROM adstream.source_status"),
	'', "A's late commits at or below the offset it handed over ($handed4) are not an overlap on C");
my $c4 = $C->safe_psql('postgres', "SELECT next_offset FROM adstream.offsets WHERE source = 'ads' AND partition = 4");
group_commit($c4 + 1);
$C->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM adstream.source_status WHERE last_error LIKE 'partition 4 stopped: also consumed by node A %'")
  or diag $C->safe_psql('postgres', 'SELECT DISTINCT last_error FROM adstream.source_status');
like($C->safe_psql('postgres', 'SELECT string_agg(DISTINCT last_error, \',\') FROM adstream.source_status'),
	qr/partition 4 stopped: also consumed by node A /, 'a commit of A beyond where C took the partition stops it on C');

$_->stop for values %node;
$_->stop for ($src, $region);
done_testing();
