# Failover to an asynchronous streaming standby, exactly once end to end.
#
# A primary ingests ad events and orders and publishes to a sink; a
# physical standby (base backup, streaming, asynchronous) follows it.  On the
# standby no worker runs and nothing is logged, and reads (ad_stats_minute,
# ad_stats(), the status views) answer as on the primary.  Then the standby
# stops receiving WAL, while the primary goes on ingesting and publishing
# records, with versions far ahead of anything the standby has seen (as if
# it had run on for long).  The primary is killed mid-stream and the standby
# promoted (pg_ctl promote).  The new primary's workers start by
# themselves, read again from Kafka what the standby never received, and
# publish under the same node name and Kafka transactional.id, with versions
# on the new timeline.  Aggregates, dead letters, attribution and the sink's
# topics read back with Pinot's upsert rule all equal the ground truth.
# Last, a setting that names the node otherwise makes the sinks wait.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $src = AdstreamTest::Broker->start(topics => [ 'ads:' . 4 * $AdstreamTest::SCALE, 'orders:' . 2 * $AdstreamTest::SCALE ]);
my $pinot = AdstreamTest::Broker->start(topics => AdstreamTest::pinot_topics());
my $primary = AdstreamTest::node('primary', allows_streaming => 1,
	'adstream.batch_max_messages' => 500,
	'adstream.attribution_max_wait' => "'5s'");
# Named in the database, not by adstream.node_name: the standby's setting
# is the default (its host name), as on a standby of another host.
$primary->safe_psql('postgres', "SELECT adstream.set_node_name('eu1')");
$primary->safe_psql('postgres', $_) for (
	"SELECT adstream.create_sink('pinot', '$pinot->{bootstrap}')",
	"SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads', options => '{\"workers\": 2}')",
	"SELECT adstream.create_source('shop', '$src->{bootstrap}', 'orders', 'orders')");

my @runs;
sub load
{
	my (%o) = @_;
	my $run = AdstreamTest::loadgen($src, topic => 'ads', count => $o{count}, seed => $o{seed},
		background => $o{background}, start_ms => $o{start_ms},
		args => [ '--users', 2000, '--stores', 50,
			($o{orders} // 1 ? ('--orders-topic', 'orders', '--orders', $o{count} / 5) : ()),
			@{ $o{args} // [] } ]);
	push @runs, $run;
	return $run;
}
sub totals
{
	my ($events, $orders) = (0, 0);
	for my $run (@runs)
	{
		AdstreamTest::finish_loadgen($run) unless defined $run->{sent};
		$events += $run->{sent};
		$orders += $1 if ${ $run->{out} } =~ /orders_sent=(\d+)/;
	}
	return ($events, $orders);
}
sub settle
{
	my ($node) = @_;
	my ($events, $orders) = totals();
	AdstreamTest::wait_consumed($node, 'ads', $events);
	AdstreamTest::wait_consumed($node, 'shop', $orders);
	$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die;
	AdstreamTest::wait_published($node);
	return $events;
}

# 1. The primary runs; a standby is made from a base backup and follows it.
# (This load's events are two days older than the next one's, beyond the
# attribution window: each load's orders can only be credited to its own
# clicks, as each load's truth assumes.)
load(count => AdstreamTest::scaled(6000), seed => 61, start_ms => $AdstreamTest::START_MS - 2 * 86400 * 1000);
my $events1 = settle($primary);
my (undef, $orders1) = totals();
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

# 2. On the standby: no worker, nothing in the log, the same identity, and
# the same answers to reads.  (The launcher starts only once recovery has
# finished; give it a few rounds to show it does not.)
sleep 2;
is($standby->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'adstream%'"),
	'0', 'no adstream process runs on the standby');
is($standby->safe_psql('postgres',
		'SELECT adstream.node_name(), adstream._node_name_setting() <> adstream.node_name(), adstream._timeline()'),
	'eu1|t|1', "the standby has the node's name from the database, not its own setting's, on timeline 1");
my %reads = (
	'ad_stats_minute' => 'SELECT ad_id, window_start, sum(impressions), sum(clicks) FROM adstream.ad_stats_minute GROUP BY 1, 2 ORDER BY 1, 2',
	'ad_stats()' => "SELECT * FROM adstream.ad_stats(now() - interval '3 days', now() + interval '1 day', 'hour') ORDER BY 1, 3",
	'campaign_stats()' => "SELECT * FROM adstream.campaign_stats(now() - interval '3 days', now() + interval '1 day', 'minute') ORDER BY 1, 3",
	'attributed_orders' => 'SELECT order_id, ad_id, amount FROM adstream.attributed_orders ORDER BY 1',
	'source_status' => 'SELECT source, partition, next_offset, accepted, duplicates, rejected FROM adstream.source_status ORDER BY 1, 2',
	'sink_status' => 'SELECT sink, backlog_rows, records_published FROM adstream.sink_status');
for my $what (sort keys %reads)
{
	my $on_primary = $primary->safe_psql('postgres', $reads{$what});
	my ($rc, $on_standby, $err) = $standby->psql('postgres', $reads{$what});
	ok($rc == 0 && $on_standby ne '' && $on_standby eq $on_primary, "a read of $what on the standby equals the primary's")
	  or diag $err;
}

# 3. The standby stops receiving WAL.  The primary goes on ingesting and
# publishing, its versions far ahead of the standby's, as if it
# had run on for long: without the timeline in the versions, its records
# would outrank the new primary's in Pinot.
$standby->append_conf('postgresql.conf', "primary_conninfo = ''");
$standby->reload;
$standby->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_stat_wal_receiver') or die;
$primary->safe_psql('postgres', "SELECT setval('adstream.record_version_seq', nextval('adstream.record_version_seq') + 100000000)");
my $published = $primary->safe_psql('postgres', "SELECT records_published FROM adstream.sinks WHERE name = 'pinot'");
load(count => AdstreamTest::scaled(6000), seed => 62);
my ($events2, $orders2) = totals();
# Then impressions only (a click could change the attribution of the
# previous load's orders, which its truth does not know), for the same ads
# and minutes, still streaming when the primary dies.
load(count => AdstreamTest::scaled(12000), seed => 63, orders => 0, background => 1, args => [ '--rate', 2000, '--click-ratio', 0 ]);
$primary->poll_query_until('postgres',
	"SELECT coalesce(sum(next_offset), 0) >= $orders2 FROM adstream.offsets WHERE source = 'shop'") or die;
$primary->poll_query_until('postgres',
	"SELECT coalesce(sum(next_offset), 0) > $events2 + 2000 FROM adstream.offsets WHERE source = 'ads'") or die;
$primary->poll_query_until('postgres',
	"SELECT records_published > $published + 500 FROM adstream.sinks WHERE name = 'pinot'") or die;

# What Pinot holds now includes records of transactions the standby lacks.
my $topic = "$PostgreSQL::Test::Utils::tmp_check/failover_ad_stats.jsonl";
IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $pinot->{bootstrap},
		'--topic', 'adstream.ad_stats' ], '>', $topic, '2>', "$topic.err")
  or die 'upsert reader failed: ' . slurp_file("$topic.err");
my ($max_version) = sort { $b <=> $a } map { /"version":\s*(\d+)/ ? $1 : () } split /\n/, slurp_file($topic);
my $standby_seq = $standby->safe_psql('postgres', 'SELECT last_value FROM adstream.record_version_seq');
cmp_ok($max_version % 2**48, '>', $standby_seq + 100000000,
	"the primary published versions ($max_version) far above the standby's ($standby_seq)");

# 4. The primary dies mid-stream; the standby, which missed its last
# transactions, is promoted.
$primary->stop('immediate');
is(join('', grep { /(ERROR|WARNING|FATAL):/ && /adstream/ } split /^/, slurp_file($standby->logfile)), '',
	'the standby logged no adstream error or warning while it was one');
my $standby_offsets = $standby->safe_psql('postgres', "SELECT sum(next_offset) FROM adstream.offsets WHERE source = 'ads'");
cmp_ok($standby_offsets, '<=', $events1, "the standby missed the primary's last batches (it has $standby_offsets messages)");
$standby->promote;
$standby->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'adstream launcher'") or die;
pass('after promotion the launcher starts by itself');

# 5. The new primary finishes the load.
settle($standby);
my @truth = map { $_->{truth} } @runs;
AdstreamTest::check_truth($standby, \@truth, 'after failover', source => 'ads');
AdstreamTest::check_orders($standby, \@truth, 'shop', 'after failover');
AdstreamTest::check_pinot($standby, $pinot, 'after failover');

is($standby->safe_psql('postgres',
		'SELECT adstream._timeline(), adstream._version_base() >> 48, published_timeline, name FROM adstream.node'),
	'2|2|2|eu1', 'the new primary publishes as eu1 on timeline 2, with versions of epoch 2');
my $txn_id = 'Kafka transactional.id "adstream.eu1.postgres.pinot"';
ok(index(slurp_file($primary->logfile), $txn_id) >= 0 && index(slurp_file($standby->logfile), $txn_id) >= 0,
	'the old and the new primary publish with the same transactional.id (the new one fences the old)');

# 6. A setting that names the node otherwise (say, the standby's host's
# configuration) does not rename it: the sinks wait, saying why.
$standby->append_conf('postgresql.conf', "adstream.node_name = 'elsewhere'");
$standby->restart;
ok($standby->poll_query_until('postgres', q{
SELECT worker_state = 'waiting'
       AND last_error LIKE 'adstream.node_name is set to ''elsewhere'', but this node is named ''eu1'' in the database%'
  FROM adstream.sink_status}), 'with adstream.node_name set to another name, the sink waits with the conflict as its error')
  or diag $standby->safe_psql('postgres', 'SELECT * FROM adstream.sink_status');

$standby->stop;
$_->stop for ($src, $pinot);
done_testing();
