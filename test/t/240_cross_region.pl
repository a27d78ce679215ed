# Cross-region union (issue #13, part 4): two regions, each with its own
# Kafka cluster and its own adstream node consuming that region's events;
# every node publishes to both regions' sinks, so each region's Pinot tables
# hold every node's rows and, summed over nodes, the global truth.
#
#   1. steady state: both regions' views (their topics read back with Pinot's
#      upsert rule, summed over nodes) equal the union of both regions'
#      ground truths (duplicates and bad records included);
#   2. east's Kafka goes down, all its brokers (the mock cluster's "down
#      all": off the network, data kept).  West keeps producing.  West's
#      view keeps up with everything that can be read, within a freshness
#      bound: west's events fully, east's as node east had published them
#      before the outage.  sink_status and source_status on both nodes say
#      what is down; the backlog for east waits in west's outbox, through
#      prune_outbox(), the maintenance jobs and a restart of the node;
#   3. east comes back, both regions produce: at the end each region's view
#      equals the global truth exactly, both nodes' statuses are clear;
#   4. a sink with a wrong address holds back nothing else, says so in
#      sink_status, and keeps its backlog until dropped; then the outboxes
#      are empty once pruned.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my @regions = qw(east west);
my %kafka = map {
	$_ => AdstreamTest::Broker->start(topics =>
		  [ 'ads:' . 4 * $AdstreamTest::SCALE, 'orders:' . 2 * $AdstreamTest::SCALE, @{ AdstreamTest::pinot_topics() } ])
} @regions;
my %node;
for my $r (@regions)
{
	my $node = AdstreamTest::node($r, 'adstream.batch_max_messages' => 500, 'adstream.attribution_max_wait' => "'5s'");
	$node->safe_psql('postgres', $_) for (
		"SELECT adstream.set_node_name('$r')",
		(map { "SELECT adstream.create_sink('$_', '$kafka{$_}{bootstrap}')" } @regions),
		"SELECT adstream.create_source('ads', '$kafka{$r}{bootstrap}', 'ads', options => '{\"workers\": 2}')",
		"SELECT adstream.create_source('shop', '$kafka{$r}{bootstrap}', 'orders', 'orders')");
	$node{$r} = $node;
}

# Every load of a region, its truth file and what it sent.
my %truths = map { $_ => [] } @regions;
my %sent = map { $_ => { ads => 0, shop => 0 } } @regions;
my $seed = 240;
sub load
{
	my ($r, %o) = @_;
	my $run = AdstreamTest::loadgen($kafka{$r}, topic => 'ads', count => $o{count}, seed => $seed++,
		background => 1,
		# no old events (--late-ratio): the retention job run while east is
		# down may give up their hours (dedup expiry), as in production
		args => [ '--users', 2000, '--stores', 50, '--orders-topic', 'orders', '--orders', $o{count} / 5,
			'--rate', $o{rate} // 8000, '--late-ratio', 0 ]);
	$run->{region} = $r;
	return $run;
}
sub finish
{
	my ($run) = @_;
	AdstreamTest::finish_loadgen($run);
	my ($o) = ${ $run->{out} } =~ /orders_sent=(\d+)/ or die 'no orders_sent';
	my $r = $run->{region};
	push @{ $truths{$r} }, $run->{truth};
	$sent{$r}{ads} += $run->{sent};
	$sent{$r}{shop} += $o;
}
# A node has consumed, attributed and published all its region sent.
sub settle
{
	my ($r, @sinks) = @_;
	my $n = $node{$r};
	AdstreamTest::wait_consumed($n, 'ads', $sent{$r}{ads});
	AdstreamTest::wait_consumed($n, 'shop', $sent{$r}{shop});
	$n->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die;
	my $which = join(',', map { "'$_'" } @sinks);
	$n->poll_query_until('postgres', "SELECT count(*) = 0 FROM adstream.sink_status
		WHERE sink IN ($which) AND (backlog_rows > 0 OR worker_state <> 'publishing')")
	  or die "sinks $which of node $r did not catch up: " . $n->safe_psql('postgres', 'SELECT * FROM adstream.sink_status');
}
sub status
{
	my ($r, $sql) = @_;
	return $node{$r}->safe_psql('postgres', $sql);
}

# Region $r's Pinot view against the union of the truth files @$truth:
# "D:N:O:K:R:A": (ad, minute) rows of the view summed over nodes that differ
# from the truth, rows of a node that differ from that node's table, credited
# orders that differ from the nodes' attributed_orders, how many nodes the
# view holds; the truth's (ad, minute) rows and credited orders.  (Orders are
# compared with the nodes' tables: a region's later loads reuse its users, so
# a node may credit an order to a click of an earlier load, which that load's
# truth cannot know; 130_attribution checks attribution against the truth.)
sub view_diff
{
	my ($r, $truth) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $load = '';
	for my $n (@regions)
	{
		PostgreSQL::Test::Utils::append_to_file("$dir/$n.min", $node{$n}->safe_psql('postgres', q{
COPY (SELECT adstream.node_name(), ad_id, window_start, sum(impressions), sum(clicks)
        FROM adstream.ad_stats_minute GROUP BY ad_id, window_start) TO STDOUT}) . "\n");
		PostgreSQL::Test::Utils::append_to_file("$dir/$n.att", $node{$n}->safe_psql('postgres', q{
COPY (SELECT order_id, ad_id, click_event_id, amount FROM adstream.attributed_orders) TO STDOUT}) . "\n");
		$load .= "COPY node_min FROM '$dir/$n.min'; COPY node_att FROM '$dir/$n.att';\n";
	}
	for my $topic ('adstream.ad_stats', 'adstream.attributed_orders')
	{
		IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $kafka{$r}{bootstrap},
				'--topic', $topic ], '>', "$dir/$topic", '2>', "$dir/err")
		  or die 'upsert reader failed: ' . slurp_file("$dir/err");
		my $t = $topic eq 'adstream.ad_stats' ? 'stats_raw' : 'orders_raw';
		$load .= "COPY $t FROM '$dir/$topic' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02');\n";
	}
	return $node{west}->safe_psql('postgres', AdstreamTest::truth_sql($truth) . qq{
CREATE TEMP TABLE node_min (node text, ad_id bigint, window_start timestamptz, impressions bigint, clicks bigint);
CREATE TEMP TABLE node_att (order_id uuid, ad_id bigint, click_event_id uuid, amount numeric);
CREATE TEMP TABLE stats_raw (j jsonb);
CREATE TEMP TABLE orders_raw (j jsonb);
$load
CREATE TEMP VIEW pinot AS
  SELECT j->>'node' AS node, (j->>'ad_id')::bigint AS ad_id, (j->>'campaign_id')::bigint AS campaign_id,
         to_timestamp((j->>'window_start')::bigint / 1000.0) AS window_start,
         (j->>'impressions')::bigint AS impressions, (j->>'clicks')::bigint AS clicks
    FROM stats_raw;
CREATE TEMP VIEW pinot_sum AS	-- Pinot's rule: SUM over node
  SELECT ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM pinot GROUP BY ad_id, window_start;
CREATE TEMP VIEW truth_att AS
  SELECT order_id, ad_id, event_id AS click_event_id, amount FROM truth_orders WHERE event_id IS NOT NULL;
CREATE TEMP VIEW pinot_att AS
  SELECT (j->>'order_id')::uuid AS order_id, (j->>'ad_id')::bigint AS ad_id,
         (j->>'click_event_id')::uuid AS click_event_id, (j->>'amount')::numeric AS amount
    FROM orders_raw;
SELECT (SELECT count(*) FROM ((TABLE pinot_sum EXCEPT TABLE truth_min) UNION ALL (TABLE truth_min EXCEPT TABLE pinot_sum)) d)
       || ':' || (SELECT count(*) FROM ((SELECT node, ad_id, window_start, impressions, clicks FROM pinot EXCEPT TABLE node_min)
                                        UNION ALL (TABLE node_min EXCEPT SELECT node, ad_id, window_start, impressions, clicks FROM pinot)) d)
       || ':' || (SELECT count(*) FROM ((TABLE pinot_att EXCEPT TABLE node_att) UNION ALL (TABLE node_att EXCEPT TABLE pinot_att)) d)
       || ':' || (SELECT count(DISTINCT node) FROM pinot)
       || ':' || (SELECT count(*) FROM truth_min) || ':' || (SELECT count(*) FROM truth_att);
});
}
sub check_view
{
	my ($r, $truth, $what) = @_;
	my ($d, $n, $o, $k, $rows, $att) = split /:/, view_diff($r, $truth);
	ok($rows > 500 && $att > 0, "$what: the truth has $rows (ad, minute) rows and $att credited orders");
	is("$d:$n:$o:$k", '0:0:0:2',
		"$what: region $r\'s Pinot view, summed over both nodes, equals the truth; each node's rows equal its table; credited orders equal the nodes' attributed_orders");
}

# 1. Steady state.
{
	my @runs = map { load($_, count => AdstreamTest::scaled(8000)) } @regions;
	finish($_) for @runs;
	settle($_, @regions) for @regions;
	AdstreamTest::check_truth($node{$_}, $truths{$_}, "steady state, node $_", source => 'ads') for @regions;
	AdstreamTest::check_orders($node{$_}, $truths{$_}, 'shop', "steady state, node $_") for @regions;
	my @truth = map { @{ $truths{$_} } } @regions;
	check_view($_, \@truth, "steady state, $_") for @regions;
}
# The time west's events take to reach the west sink with both regions up,
# to compare with the same load while east is down (phase 2).
my $baseline;
{
	my $run = load('west', count => AdstreamTest::scaled(12000), rate => 4000);
	finish($run);
	my $t = time();
	settle('west', @regions);
	$baseline = time() - $t;
	settle('east', @regions);
}

# 2. East's Kafka goes down, every broker of it; west keeps producing.
my $east_truth = [ @{ $truths{east} } ];
my $outbox0 = status('west', "SELECT pg_total_relation_size('adstream.outbox')");
my $t_down = time();
$kafka{east}->cmd('down all');
my $down_at = status('west', 'SELECT now()');
ok($node{east}->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'disconnected' AND NOT connected
	AND last_error IS NOT NULL) FROM adstream.source_status}),
	'east down: source_status on node east says its sources are disconnected, with the error');
for my $r (@regions)
{
	ok($node{$r}->poll_query_until('postgres', q{SELECT connected IS FALSE AND last_error IS NOT NULL
		AND worker_state IN ('disconnected', 'connecting', 'retrying', 'restarting')
		FROM adstream.sink_status WHERE sink = 'east'}),
		"east down: sink_status on node $r says sink east is not connected, with the error")
	  or diag status($r, 'SELECT * FROM adstream.sink_status');
}
my $backlog0 = status('west', "SELECT backlog_rows FROM adstream.sink_status WHERE sink = 'east'");

my $run = load('west', count => AdstreamTest::scaled(12000), rate => 4000);
my $t0 = time();
finish($run);
my $t_loaded = time();
settle('west', 'west');
my $fresh = time() - $t_loaded;
cmp_ok($fresh, '<', 15, sprintf('east down: west\'s events (%.1f s of load) reached the west sink %.1f s after the last was sent '
		  . '(%.1f s with both regions up)', $t_loaded - $t0, $fresh, $baseline));
is(status('west', q{SELECT string_agg(sink || ':' || worker_state || ':' || connected || ':' || coalesce(last_error, '-') || ':' || backlog_rows,
	',') FROM adstream.sink_status WHERE sink = 'west'}), 'west:publishing:true:-:0',
	'east down: node west\'s sink west is publishing, connected, without error or backlog');
is(status('east', q{SELECT string_agg(sink || ':' || worker_state || ':' || connected || ':' || coalesce(last_error, '-') || ':' || backlog_rows,
	',') FROM adstream.sink_status WHERE sink = 'west'}), 'west:publishing:true:-:0',
	'east down: node east\'s sink west is publishing, connected, without error or backlog');
is(status('west', q{SELECT bool_and(worker_state = 'consuming' AND connected AND last_error IS NULL) FROM adstream.source_status}),
	't', 'east down: node west\'s sources consume, connected, without error');
AdstreamTest::check_truth($node{west}, $truths{west}, 'east down, node west', source => 'ads');
# West's view: all of west's events, east's as published before the outage.
check_view('west', [ @$east_truth, @{ $truths{west} } ], 'east down');

# The backlog for east waits in west's outbox: it grew, and survives
# pruning, the maintenance jobs and a restart of the node.  prune_outbox()
# (which each publisher also runs every 10 s) keeps one row per key of the
# backlog, the latest: every (ad, minute) that node west changed since east
# went down is in it.
my ($backlog, $bytes) = split /\|/, status('west', "SELECT backlog_rows, backlog_bytes FROM adstream.sink_status WHERE sink = 'east'");
cmp_ok($backlog, '>', $backlog0, "east down: node west's backlog for sink east grew ($backlog0 -> $backlog rows, $bytes bytes)");
my $outage_s = time() - $t_down;
my $outbox1 = status('west', "SELECT pg_total_relation_size('adstream.outbox')");
diag sprintf('east down for %.1f s while west sent %d events at 4000/s: backlog %d rows, %d bytes of rows; '
	  . 'outbox %d -> %d bytes on disk (table and index)', $outage_s, $run->{sent}, $backlog, $bytes, $outbox0, $outbox1);
my $backlog_sql = qq{
SELECT (SELECT count(*) FROM b) || ':' || (SELECT count(DISTINCT (ad_id, window_start)) FROM b) || ':'
       || (SELECT count(*) FROM (SELECT DISTINCT ad_id, window_start FROM adstream.ad_stats_minute
                                  WHERE updated_at > '$down_at'::timestamptz + interval '1 second') m
            WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.ad_id = m.ad_id AND b.window_start = m.window_start))
       || ':' || (SELECT count(DISTINCT (ad_id, window_start)) FROM adstream.ad_stats_minute
                   WHERE updated_at > '$down_at'::timestamptz + interval '1 second')};
$backlog_sql = qq{WITH b AS (SELECT o.* FROM adstream.outbox o, adstream.sinks s
  WHERE s.name = 'east' AND o.kind = 'ad_stats' AND o.txid >= pg_snapshot_xmin(s.done_snapshot)
    AND NOT pg_visible_in_snapshot(o.txid, s.done_snapshot)
    AND (s.target_snapshot IS NULL OR o.id > s.last_id OR NOT pg_visible_in_snapshot(o.txid, s.target_snapshot)))
$backlog_sql};
status('west', 'SELECT adstream.prune_outbox()');
status('west', "SELECT adstream.run_maintenance(j) FROM unnest(ARRAY['adstream_partitions', 'adstream_retention', 'adstream_rollups']) j");
my ($rows, $keys, $missing, $changed) = split /:/, status('west', $backlog_sql);
is("$rows:$missing", "$keys:0",
	"east down: after prune_outbox() and run_maintenance(), node west's backlog for east has one row per key ($keys), "
	  . "and every key changed since east went down ($changed)");
cmp_ok($changed, '>', 1000, 'east down: node west changed many keys during the outage');
$t0 = time();
$node{west}->restart;
cmp_ok(time() - $t0, '<', 10, 'east down: node west restarts promptly with a sink unreachable');
is(status('west', $backlog_sql), "$rows:$keys:0:$changed", 'east down: the backlog survives a restart of node west');
ok($node{west}->poll_query_until('postgres', q{SELECT connected IS FALSE AND last_error IS NOT NULL
	FROM adstream.sink_status WHERE sink = 'east'}),
	'east down: after the restart, node west\'s sink east is again shown not connected, with the error');
is(status('east', "SELECT sum(next_offset) FROM adstream.offsets WHERE source = 'ads'"), $sent{east}{ads},
	'east down: node east has consumed nothing new');

# 3. East comes back; both regions produce.
$kafka{east}->cmd('up all');
my $t_up = time();
my @runs = map { load($_, count => AdstreamTest::scaled(8000), rate => 4000) } @regions;
ok($node{west}->poll_query_until('postgres', "SELECT connected AND last_error IS NULL FROM adstream.sink_status WHERE sink = 'east'"),
	'east up: node west\'s sink east is connected again, its error cleared');
my $reconnect = time() - $t_up;
finish($_) for @runs;
settle($_, @regions) for @regions;
diag sprintf('east up: sink east of node west reconnected after %.1f s; everything published %.1f s after east came back',
	$reconnect, time() - $t_up);
ok($node{east}->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'consuming' AND connected
	AND last_error IS NULL AND lag = 0) FROM adstream.source_status}),
	'east up: node east\'s sources consume again, connected, without error, lag 0');
for my $r (@regions)
{
	is(status($r, q{SELECT string_agg(sink || ':' || worker_state || ':' || connected || ':' || coalesce(last_error, '-') || ':' || backlog_rows,
		',' ORDER BY sink) FROM adstream.sink_status}), 'east:publishing:true:-:0,west:publishing:true:-:0',
		"east up: node $r\'s sinks publish, connected, without error or backlog");
	AdstreamTest::check_truth($node{$r}, $truths{$r}, "after the outage, node $r", source => 'ads');
}
my @truth = map { @{ $truths{$_} } } @regions;
check_view($_, \@truth, "after the outage, $_") for @regions;

# 4. A misconfigured sink (nothing listens at its address) holds back
# neither the other sinks nor ingestion; it says so, and keeps its backlog
# until it is dropped.
my $nowhere = PostgreSQL::Test::Cluster::get_free_port();
status('west', "SELECT adstream.create_sink('typo', '127.0.0.1:$nowhere')");
finish(load('west', count => AdstreamTest::scaled(4000), rate => 4000));
settle('west', @regions);
ok($node{west}->poll_query_until('postgres', q{SELECT connected IS FALSE AND last_error IS NOT NULL AND backlog_rows > 0
	AND worker_state IN ('disconnected', 'connecting') FROM adstream.sink_status WHERE sink = 'typo'}),
	'a misconfigured sink: not connected, with the error and a backlog')
  or diag status('west', 'SELECT * FROM adstream.sink_status');
@truth = map { @{ $truths{$_} } } @regions;
check_view('east', \@truth, 'a misconfigured sink on node west');
status('west', "SELECT adstream.drop_sink('typo')");

for my $r (@regions)
{
	status($r, 'SELECT adstream.prune_outbox()');
	is(status($r, 'SELECT count(*) FROM adstream.outbox'), '0', "node $r\'s outbox is empty once both sinks have published it");
}

$_->stop for values %node;
$_->stop for values %kafka;
done_testing();
