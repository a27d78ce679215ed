# Publishing to Pinot through two regions' Kafka clusters: after a normal run,
# a kill -9 of a publisher, an immediate server stop, one region down for a
# while, and Kafka transactions made to fail, each region's topics, read back
# with Pinot's upsert rule, equal ad_stats_minute and attributed_orders.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $src = AdstreamTest::Broker->start(topics => [ 'ads:4', 'orders:2' ]);
my %region = map { $_ => AdstreamTest::Broker->start(topics => [ 'adstream.ad_stats:4', 'adstream.attributed_orders:2' ]) }
  qw(region_a region_b);
my $node = AdstreamTest::node('publish',
	'adstream.node_name' => "'eu1'",
	'adstream.batch_max_messages' => 500,
	'adstream.attribution_max_wait' => "'5s'");
$node->safe_psql('postgres', $_) for (
	"SELECT adstream.create_sink('region_a', '$region{region_a}{bootstrap}')",
	"SELECT adstream.create_sink('region_b', '$region{region_b}{bootstrap}')",
	"SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads', options => '{\"workers\": 2}')",
	"SELECT adstream.create_source('shop', '$src->{bootstrap}', 'orders', 'orders')");

my ($events, $orders) = (0, 0);
sub load
{
	my (%o) = @_;
	my $run = AdstreamTest::loadgen($src, topic => 'ads', count => $o{count}, seed => $o{seed},
		background => $o{background},
		args => [ '--users', 2000, '--stores', 50, '--orders-topic', 'orders', '--orders', $o{count} / 5,
			@{ $o{args} // [] } ]);
	return $run;
}
sub settle
{
	my ($run) = @_;
	AdstreamTest::finish_loadgen($run) unless defined $run->{sent};
	my ($o) = ${ $run->{out} } =~ /orders_sent=(\d+)/;
	$events += $run->{sent};
	$orders += $o;
	AdstreamTest::wait_consumed($node, 'ads', $events);
	AdstreamTest::wait_consumed($node, 'shop', $orders);
	$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die;
	AdstreamTest::wait_published($node);
}

# 1. A normal run reaches both regions.
settle(load(count => 8000, seed => 41));
AdstreamTest::check_pinot($node, $region{$_}, "normal run, $_") for sort keys %region;

# 2. Region B goes down; region A and ingestion go on.  Meanwhile region A's
# publisher is killed, and the server stopped immediately.
$region{region_b}->cmd('down all');
my $run = load(count => 8000, seed => 42, background => 1, args => [ '--rate', 6000 ]);
$node->poll_query_until('postgres', "SELECT records_published > 0 FROM adstream.sinks WHERE name = 'region_a'") or die;
# With slow round trips, a publisher spends most of its time inside a Kafka
# transaction, between produce and commit: that is where the kill lands.
$region{region_a}->cmd('rtt 1 300');
sleep 1;
my ($pid) = $node->safe_psql('postgres',
	"SELECT w.pid FROM adstream.publisher_status() w JOIN adstream.sinks s ON s.id = w.sink_id WHERE s.name = 'region_a'");
ok($pid, 'region A has a publisher');
kill 'KILL', $pid;
$region{region_a}->cmd('rtt 1 0');
$node->poll_query_until('postgres', "SELECT coalesce(sum(next_offset), 0) > $events + 3000 FROM adstream.offsets WHERE source = 'ads'") or die;
$node->stop('immediate');
$node->start;
AdstreamTest::finish_loadgen($run);
$events += $run->{sent};
my ($o) = ${ $run->{out} } =~ /orders_sent=(\d+)/;
$orders += $o;
AdstreamTest::wait_consumed($node, 'ads', $events);
AdstreamTest::wait_consumed($node, 'shop', $orders);
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die;
$node->poll_query_until('postgres', "SELECT backlog_rows = 0 FROM adstream.sink_status WHERE sink = 'region_a'") or die;
cmp_ok($node->safe_psql('postgres', "SELECT backlog_rows FROM adstream.sink_status WHERE sink = 'region_b'"), '>', 0,
	'the backlog of the region that is down waits in the outbox');
AdstreamTest::check_pinot($node, $region{region_a}, 'kill -9 and immediate stop, region_a');

# 3. Region B returns and drains.
$region{region_b}->cmd('up all');
AdstreamTest::wait_published($node);
AdstreamTest::check_pinot($node, $region{region_b}, 'after its outage, region_b');

# 4. Kafka transactions that fail are aborted and the page sent again.
my $aborted = $node->safe_psql('postgres', "SELECT txns_aborted FROM adstream.sinks WHERE name = 'region_a'");
$region{region_a}->cmd('errors Produce 3 MSG_SIZE_TOO_LARGE MSG_SIZE_TOO_LARGE MSG_SIZE_TOO_LARGE');
settle(load(count => 4000, seed => 43));
cmp_ok($node->safe_psql('postgres', "SELECT txns_aborted FROM adstream.sinks WHERE name = 'region_a'"), '>', $aborted,
	'failed Kafka transactions were aborted');
AdstreamTest::check_pinot($node, $region{$_}, "after aborted transactions, $_") for sort keys %region;

$node->safe_psql('postgres', 'SELECT adstream.prune_outbox()');
is($node->safe_psql('postgres', 'SELECT count(*) FROM adstream.outbox'), '0',
	'the outbox is empty once every sink has published it');

$node->stop;
$_->stop for ($src, values %region);
done_testing();
