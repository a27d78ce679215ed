# Several PostgreSQL servers (nodes) on one topic (issue #13, part 2).
#
# Three nodes split one topic of 48 partitions, 16 each (the source's
# "partitions" option), each with its own node name and its own two sinks,
# which stand for two regions' Kafka clusters.  One node is killed and
# restarted mid-stream.  The nodes' aggregates and dead letters, added up,
# equal the ground truth; each region's topics, read back with Pinot's upsert
# rule and summed over nodes, equal it too.  Then a fourth node is
# misconfigured to consume one partition of the first: both stop that
# partition, each with an error naming the other, found through the
# metadata of their commits to the Kafka consumer group.
#
# The load generator spreads messages round robin and sends duplicates to
# other partitions than their originals, which breaks the co-partitioning
# contract (docs/deployment.md): so this test sends no duplicates and no
# orders; a duplicate on another node would be counted on both.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $src = AdstreamTest::Broker->start(topics => [ 'ads:48' ]);
my %region = map { $_ => AdstreamTest::Broker->start(topics => [ 'adstream.ad_stats:4', 'adstream.attributed_orders:2' ]) }
  qw(region_a region_b);
my %share = (n1 => '0-15', n2 => '16-31', n3 => '32-47');
my %node;
for my $name (sort keys %share)
{
	my $node = AdstreamTest::node($name, 'adstream.batch_max_messages' => 500);
	$node->safe_psql('postgres', "SELECT adstream.set_node_name('$name')");
	$node->safe_psql('postgres', "SELECT adstream.create_sink('$_', '$region{$_}{bootstrap}')") for sort keys %region;
	$node->safe_psql('postgres', "SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads',
		options => '{\"partitions\": \"$share{$name}\", \"workers\": 2}')");
	$node{$name} = $node;
}

sub consumed
{
	my $sum = 0;
	$sum += $_->safe_psql('postgres', 'SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets') for values %node;
	return $sum;
}
sub wait_all_consumed
{
	my ($total) = @_;
	for (1 .. 1200)
	{
		return 1 if consumed() >= $total;
		select(undef, undef, undef, 0.1);
	}
	die 'the nodes did not consume ' . $total . ' messages: ' . consumed();
}

# 1. A stream over all 48 partitions; node n2 dies and restarts mid-stream.
my $run = AdstreamTest::loadgen($src, topic => 'ads', count => 30000, seed => 71, background => 1,
	args => [ '--rate', 10000, '--dup-ratio', 0 ]);
$node{n2}->poll_query_until('postgres', 'SELECT coalesce(sum(next_offset), 0) > 3000 FROM adstream.offsets') or die;
$node{n2}->stop('immediate');
$node{n2}->start;
AdstreamTest::finish_loadgen($run);
wait_all_consumed($run->{sent});
AdstreamTest::wait_published($_) for values %node;

for my $name (sort keys %share)
{
	my ($lo, $hi) = split /-/, $share{$name};
	is($node{$name}->safe_psql('postgres', 'SELECT min(partition), max(partition), count(*) FROM adstream.offsets'),
		"$lo|$hi|16", "node $name consumed exactly its partitions $share{$name}");
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
		"COPY (SELECT adstream.node_name(), ad_id, campaign_id, window_start, impressions, clicks FROM adstream.ad_stats_minute) TO STDOUT") . "\n");
	PostgreSQL::Test::Utils::append_to_file("$f.rej", $node{$name}->safe_psql('postgres',
		"COPY (SELECT reason FROM adstream.rejected_events) TO STDOUT") . "\n");
	PostgreSQL::Test::Utils::append_to_file("$f.acc", $node{$name}->safe_psql('postgres',
		"COPY (SELECT coalesce(sum(accepted), 0) FROM adstream.offsets) TO STDOUT") . "\n");
	$load .= "COPY all_min FROM '$f.min'; COPY all_rej FROM '$f.rej'; COPY all_acc FROM '$f.acc';\n";
}
for my $r (sort keys %region)
{
	my $f = "$dir/$r.jsonl";
	IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $region{$r}{bootstrap},
			'--topic', 'adstream.ad_stats' ], '>', $f, '2>', "$f.err")
	  or die 'upsert reader failed: ' . slurp_file("$f.err");
	$load .= "COPY pinot_raw (j) FROM '$f' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02'); UPDATE pinot_raw SET region = '$r' WHERE region IS NULL;\n";
}
my $checker = $node{n1};
my $res = $checker->safe_psql('postgres', AdstreamTest::truth_sql([ $run->{truth} ]) . qq{
CREATE TEMP TABLE all_min (node text, ad_id bigint, campaign_id bigint, window_start timestamptz, impressions bigint, clicks bigint);
CREATE TEMP TABLE all_rej (reason text);
CREATE TEMP TABLE all_acc (n bigint);
CREATE TEMP TABLE pinot_raw (j jsonb, region text);
$load
CREATE TEMP VIEW got_min AS
  SELECT ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM all_min GROUP BY ad_id, window_start;
CREATE TEMP VIEW truth_rej AS
  SELECT split_part(line, ',', 2) AS reason, sum(split_part(line, ',', 3)::bigint) AS n
    FROM truth_raw WHERE line LIKE 'reject,%' GROUP BY 1;
CREATE TEMP VIEW got_rej AS SELECT reason, count(*)::numeric AS n FROM all_rej GROUP BY 1;
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
my ($rows, $min_diff, $rej_diff, $acc_ok, $regions) = split /\|/, $res;
ok($rows > 1000, "the truth has $rows (ad, minute) rows");
is($min_diff, 0, 'every (ad, minute) count, added up over the nodes, equals the ground truth');
is($rej_diff, 0, 'dead letters per reason, over the nodes, equal the ground truth');
is($acc_ok, 't', 'accepted events over the nodes equal distinct valid events');
is($regions, 'region_a:0:0:3,region_b:0:0:3',
	"each region's topic, read with Pinot's upsert rule, holds each node's rows, and summed over the 3 nodes equals the truth");

# 3. A fourth node consumes partition 15, which is n1's: both stop it, each
# naming the other.
my $n4 = AdstreamTest::node('n4', 'adstream.batch_max_messages' => 500);
$n4->safe_psql('postgres', $_) for (
	"SELECT adstream.set_node_name('n4')",
	"SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads', options => '{\"partitions\": \"15\"}')");
my $trickle = AdstreamTest::loadgen($src, topic => 'ads', count => 6000, seed => 72, background => 1,
	args => [ '--rate', 600, '--dup-ratio', 0 ]);
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

$_->stop for (values %node, $n4);
$_->stop for ($src, values %region);
done_testing();
