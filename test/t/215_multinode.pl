# Several PostgreSQL servers (nodes) on one topic (issue #13, part 2).
#
# Three nodes split a topic of ad events and one of orders, 48 partitions
# each, 16 per node (the sources' "partitions" option), each node with its
# own name and its own two sinks, which stand for two regions' Kafka
# clusters.  The producer keeps the co-partitioning contract
# (docs/deployment.md): events and orders keyed by user, each user's events,
# orders and re-sends on the user's partition (loadgen --co-partition).  One
# node is killed and restarted mid-stream.  The nodes' aggregates, dead
# letters, orders and attribution, put together, equal the ground truth;
# each region's topics, read back with Pinot's upsert rule and summed over
# nodes, equal it too.  Then a fourth node is misconfigured to consume one
# partition of the first: both stop that partition, each with an error
# naming the other, found through the metadata of their commits to the
# Kafka consumer group.  Last, a producer that breaks the contract is
# counted and reported.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $src = AdstreamTest::Broker->start(topics => [ 'ads:48', 'orders:48' ]);
my %region = map { $_ => AdstreamTest::Broker->start(topics => AdstreamTest::pinot_topics()) }
  qw(region_a region_b);
my %share = (n1 => '0-15', n2 => '16-31', n3 => '32-47');
my %node;
for my $name (sort keys %share)
{
	my $node = AdstreamTest::node($name, 'adstream.batch_max_messages' => 500, 'adstream.attribution_max_wait' => "'5s'");
	$node->safe_psql('postgres', "SELECT adstream.set_node_name('$name')");
	$node->safe_psql('postgres', "SELECT adstream.create_sink('$_', '$region{$_}{bootstrap}')") for sort keys %region;
	$node->safe_psql('postgres', "SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads',
		options => '{\"partitions\": \"$share{$name}\", \"workers\": 2}')");
	$node->safe_psql('postgres', "SELECT adstream.create_source('shop', '$src->{bootstrap}', 'orders', 'orders',
		options => '{\"partitions\": \"$share{$name}\"}')");
	$node{$name} = $node;
}

sub wait_all_consumed { AdstreamTest::wait_consumed_over([ values %node ], @_); }

# 1. A stream over all 48 partitions; node n2 dies and restarts mid-stream.
my $run = AdstreamTest::loadgen($src, topic => 'ads', count => AdstreamTest::scaled(30000), seed => 71, background => 1,
	args => [ '--rate', 10000, '--co-partition', '--users', 20000, '--stores', 50,
		'--orders-topic', 'orders', '--orders', 6000 ]);
$node{n2}->poll_query_until('postgres', "SELECT coalesce(sum(next_offset), 0) > 3000 FROM adstream.offsets WHERE source = 'ads'")
  or die;
$node{n2}->stop('immediate');
$node{n2}->start;
AdstreamTest::finish_loadgen($run);
my ($orders_sent) = ${ $run->{out} } =~ /orders_sent=(\d+)/;
wait_all_consumed('ads', $run->{sent});
wait_all_consumed('shop', $orders_sent);
$_->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die for values %node;
AdstreamTest::wait_published($_) for values %node;

for my $name (sort keys %share)
{
	my ($lo, $hi) = split /-/, $share{$name};
	is($node{$name}->safe_psql('postgres', 'SELECT string_agg(DISTINCT min || \'|\' || max || \'|\' || n, \',\') FROM '
			. '(SELECT min(partition), max(partition), count(*) AS n FROM adstream.offsets GROUP BY source) s'),
		"$lo|$hi|16", "node $name consumed exactly its partitions $share{$name} of both topics");
	is($node{$name}->safe_psql('postgres', "SELECT string_agg(DISTINCT coalesce(last_error, ''), ',') FROM adstream.source_status"),
		'', "node $name reports no error");
}

# 2. The nodes' results, added up, against the truth; and each region's
# topics read as Pinot does, summed over nodes.
my $dir = PostgreSQL::Test::Utils::tempdir();
my $load = '';
for my $name (sort keys %share)
{
	my $f = "$dir/$name";
	PostgreSQL::Test::Utils::append_to_file("$f.min", $node{$name}->safe_psql('postgres',
		"COPY (SELECT adstream.node_name(), ad_id, max(campaign_id), window_start, sum(impressions), sum(clicks) "
		  . "FROM adstream.ad_stats_minute GROUP BY ad_id, window_start) TO STDOUT") . "\n");	# over the workers' stripes
	PostgreSQL::Test::Utils::append_to_file("$f.rej", $node{$name}->safe_psql('postgres',
		"COPY (SELECT source, reason FROM adstream.rejected_events) TO STDOUT") . "\n");
	PostgreSQL::Test::Utils::append_to_file("$f.acc", $node{$name}->safe_psql('postgres',
		"COPY (SELECT coalesce(sum(accepted), 0) FROM adstream.offsets WHERE source = 'ads') TO STDOUT") . "\n");
	PostgreSQL::Test::Utils::append_to_file("$f.ord", $node{$name}->safe_psql('postgres', q{
COPY (SELECT order_id, ad_id, campaign_id, event_id, (extract(epoch FROM event_ts) * 1000)::bigint,
             (extract(epoch FROM ts) * 1000)::bigint, amount, currency FROM adstream.orders) TO STDOUT}) . "\n");
	PostgreSQL::Test::Utils::append_to_file("$f.att", $node{$name}->safe_psql('postgres',
		"COPY (SELECT order_id, ad_id, click_event_id, amount, record_uuid FROM adstream.attributed_orders) TO STDOUT") . "\n");
	$load .= "COPY all_min FROM '$f.min'; COPY all_rej FROM '$f.rej'; COPY all_acc FROM '$f.acc'; "
	  . "COPY all_orders FROM '$f.ord'; COPY all_att FROM '$f.att';\n";
}
for my $r (sort keys %region)
{
	my $f = "$dir/$r.jsonl";
	for my $topic ('adstream.ad_stats', 'adstream.attributed_orders')
	{
		my $t = $topic eq 'adstream.ad_stats' ? 'pinot_raw' : 'pinot_orders_raw';
		IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $region{$r}{bootstrap},
				'--topic', $topic ], '>', "$f.$t", '2>', "$f.err")
		  or die 'upsert reader failed: ' . slurp_file("$f.err");
		$load .= "COPY $t (j) FROM '$f.$t' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02'); "
		  . "UPDATE $t SET region = '$r' WHERE region IS NULL;\n";
	}
}
my $checker = $node{n1};
my $res = $checker->safe_psql('postgres', AdstreamTest::truth_sql([ $run->{truth} ]) . qq{
CREATE TEMP TABLE all_min (node text, ad_id bigint, campaign_id bigint, window_start timestamptz, impressions bigint, clicks bigint);
CREATE TEMP TABLE all_rej (source text, reason text);
CREATE TEMP TABLE all_acc (n bigint);
CREATE TEMP TABLE all_orders (order_id uuid, ad_id bigint, campaign_id bigint, event_id uuid, event_ms bigint,
                              order_ms bigint, amount numeric, currency text);
CREATE TEMP TABLE all_att (order_id uuid, ad_id bigint, click_event_id uuid, amount numeric, record_uuid uuid);
CREATE TEMP TABLE pinot_raw (j jsonb, region text);
CREATE TEMP TABLE pinot_orders_raw (j jsonb, region text);
$load
CREATE TEMP VIEW got_min AS
  SELECT ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM all_min GROUP BY ad_id, window_start;
CREATE TEMP VIEW truth_rej AS
  SELECT split_part(line, ',', 2) AS reason, sum(split_part(line, ',', 3)::bigint) AS n
    FROM truth_raw WHERE line LIKE 'reject,%' GROUP BY 1;
CREATE TEMP VIEW got_rej AS SELECT reason, count(*)::numeric AS n FROM all_rej WHERE source = 'ads' GROUP BY 1;
CREATE TEMP VIEW truth_orej AS
  SELECT split_part(line, ',', 2) AS reason, sum(split_part(line, ',', 3)::bigint) AS n
    FROM truth_raw WHERE line LIKE 'reject_order,%' GROUP BY 1;
CREATE TEMP VIEW got_orej AS SELECT reason, count(*)::numeric AS n FROM all_rej WHERE source = 'shop' GROUP BY 1;
CREATE TEMP VIEW truth_att AS
  SELECT order_id, ad_id, event_id AS click_event_id, amount FROM truth_orders WHERE event_id IS NOT NULL;
CREATE TEMP VIEW pinot_att AS
  SELECT region, (j->>'order_id')::uuid AS order_id, (j->>'ad_id')::bigint AS ad_id,
         (j->>'click_event_id')::uuid AS click_event_id, (j->>'amount')::numeric AS amount
    FROM pinot_orders_raw;
CREATE TEMP VIEW pinot AS
  SELECT region, j->>'node' AS node, (j->>'ad_id')::bigint AS ad_id, (j->>'campaign_id')::bigint AS campaign_id,
         to_timestamp((j->>'window_start')::bigint / 1000.0) AS window_start,
         (j->>'impressions')::bigint AS impressions, (j->>'clicks')::bigint AS clicks
    FROM pinot_raw;
CREATE TEMP VIEW pinot_sum AS
  SELECT region, ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM pinot GROUP BY region, ad_id, window_start;
SELECT (SELECT count(*) FROM truth_min),
       (SELECT count(*) FROM ((TABLE truth_min EXCEPT TABLE got_min) UNION ALL (TABLE got_min EXCEPT TABLE truth_min)) d),
       (SELECT count(*) FROM ((TABLE truth_rej EXCEPT TABLE got_rej) UNION ALL (TABLE got_rej EXCEPT TABLE truth_rej)) d),
       (SELECT sum(n) FROM all_acc) = (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,unique,%'),
       (SELECT count(*) FROM truth_orders) || ':' || (SELECT count(*) FROM truth_att) || ':'
       || (SELECT count(*) FROM ((TABLE truth_orders EXCEPT TABLE all_orders) UNION ALL (TABLE all_orders EXCEPT TABLE truth_orders)) d) || ':'
       || (SELECT count(*) FROM ((TABLE truth_orej EXCEPT TABLE got_orej) UNION ALL (TABLE got_orej EXCEPT TABLE truth_orej)) d) || ':'
       || (SELECT count(*) FROM ((TABLE truth_att EXCEPT SELECT order_id, ad_id, click_event_id, amount FROM all_att)
                                 UNION ALL (SELECT order_id, ad_id, click_event_id, amount FROM all_att EXCEPT TABLE truth_att)) d) || ':'
       || (SELECT count(*) - count(DISTINCT order_id) FROM all_att),
       (SELECT string_agg(r || ':' || (SELECT count(*) FROM
			((SELECT order_id, ad_id, click_event_id, amount FROM pinot_att WHERE region = r EXCEPT TABLE truth_att)
			 UNION ALL (TABLE truth_att EXCEPT SELECT order_id, ad_id, click_event_id, amount FROM pinot_att WHERE region = r)) d),
			',' ORDER BY r) FROM unnest(ARRAY['region_a', 'region_b']) AS r),
       (SELECT string_agg(r || ':' || (SELECT count(*) FROM
			((SELECT ad_id, campaign_id, window_start, impressions, clicks FROM pinot_sum WHERE region = r EXCEPT TABLE truth_min)
			 UNION ALL (TABLE truth_min EXCEPT SELECT ad_id, campaign_id, window_start, impressions, clicks FROM pinot_sum WHERE region = r)) d)
			|| ':' || (SELECT count(*) FROM
			((SELECT node, ad_id, window_start, impressions, clicks FROM pinot WHERE region = r
			  EXCEPT SELECT node, ad_id, window_start, impressions, clicks FROM all_min)
			 UNION ALL (SELECT node, ad_id, window_start, impressions, clicks FROM all_min
			  EXCEPT SELECT node, ad_id, window_start, impressions, clicks FROM pinot WHERE region = r)) d)
			|| ':' || (SELECT count(DISTINCT node) FROM pinot WHERE region = r), ',' ORDER BY r)
		  FROM unnest(ARRAY['region_a', 'region_b']) AS r);
});
my ($rows, $min_diff, $rej_diff, $acc_ok, $orders, $pinot_orders, $regions) = split /\|/, $res;
ok($rows > 1000, "the truth has $rows (ad, minute) rows");
is($min_diff, 0, 'every (ad, minute) count, added up over the nodes, equals the ground truth');
is($rej_diff, 0, 'dead letters per reason, over the nodes, equal the ground truth');
is($acc_ok, 't', 'accepted events over the nodes equal distinct valid events');
like($orders, qr/^\d+:\d+:0:0:0:0$/,
	"orders ($orders: truth, credited; then differences in orders and attribution, order dead letters, credits, "
	  . 'orders credited twice): every order judged on its node as the truth says');
is($pinot_orders, 'region_a:0,region_b:0', "each region's attributed_orders topic, read as Pinot does, equals the truth");
is($regions, 'region_a:0:0:3,region_b:0:0:3',
	"each region's topic, read with Pinot's upsert rule, holds each node's rows, and summed over the 3 nodes equals the truth");

# 3. A fourth node consumes partition 15, which is n1's: both stop it, each
# naming the other.
my $n4 = AdstreamTest::node('n4', 'adstream.batch_max_messages' => 500);
$n4->safe_psql('postgres', $_) for (
	"SELECT adstream.set_node_name('n4')",
	"SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads', options => '{\"partitions\": \"15\"}')");
my $trickle = AdstreamTest::loadgen($src, topic => 'ads', count => AdstreamTest::scaled(9000), seed => 72, background => 1,
	args => [ '--rate', 600, '--co-partition', '--users', 20000 ]);
$n4->poll_query_until('postgres', 'SELECT coalesce(sum(next_offset), 0) > 0 FROM adstream.offsets')
  or diag 'n4 consumed nothing: ' . $n4->safe_psql('postgres', 'SELECT * FROM adstream.source_status');
$node{n1}->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM adstream.source_status WHERE last_error LIKE 'partition 15 stopped: also consumed by node n4 %'")
  or diag $node{n1}->safe_psql('postgres', 'SELECT DISTINCT last_error FROM adstream.source_status');
$n4->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM adstream.source_status WHERE last_error LIKE 'partition 15 stopped: also consumed by node n1 %'")
  or diag $n4->safe_psql('postgres', 'SELECT DISTINCT last_error FROM adstream.source_status');
like($node{n1}->safe_psql('postgres', 'SELECT string_agg(DISTINCT last_error, \',\') FROM adstream.source_status'),
	qr/partition 15 stopped: also consumed by node n4 /, 'n1 stopped partition 15, naming n4, in source_status');
like($n4->safe_psql('postgres', 'SELECT string_agg(DISTINCT last_error, \',\') FROM adstream.source_status'),
	qr/partition 15 stopped: also consumed by node n1 /, 'n4 stopped partition 15, naming n1, in source_status');
like(slurp_file($node{n1}->logfile), qr/partition 15 of topic "ads" is also consumed by node n4 /,
	'and said so in its log');
AdstreamTest::finish_loadgen($trickle);

# 4. A producer that breaks the co-partitioning contract (the load
# generator's default: keyed by ad, spread round robin) is counted and
# reported by the nodes that see it.
AdstreamTest::loadgen($src, topic => 'ads', count => 480, seed => 73, args => [ '--dup-ratio', 0 ]);
$node{n3}->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM adstream.source_status WHERE last_error LIKE '% valid messages without a key or not on their key''s partition %'")
  or diag $node{n3}->safe_psql('postgres', 'SELECT DISTINCT last_error FROM adstream.source_status');
like($node{n3}->safe_psql('postgres', 'SELECT string_agg(DISTINCT last_error, \',\') FROM adstream.source_status'),
	qr/(^|,)\d+ valid messages without a key or not on their key's partition \(e\.g\. \d+\): co-partitioning contract broken(,|$)/,
	'n3 counts the messages that break the co-partitioning contract, in source_status');
like(slurp_file($node{n3}->logfile), qr/co-partitioning contract broken/, 'and warns of them in its log');

$_->stop for (values %node, $n4);
$_->stop for ($src, values %region);
done_testing();
