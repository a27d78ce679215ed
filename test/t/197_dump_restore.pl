# Dump and restore (issue #11, case 8).  pg_dump runs while ingestion does
# (events flowing, a sink publishing, orders credited before), and the dump
# is restored with pg_restore into a second, fresh cluster on the same broker.
# There no worker runs until adstream.adopt_restored(): its offsets and every
# table equal what the dump holds.  Then the original stops, the copy is
# adopted and consumes to the end of the stream: its aggregates, dead letters
# per reason, orders and their attribution equal the ground truth, and the
# sink's topics, read back with Pinot's upsert rule, equal its tables,
# although the original went on publishing after the dump.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;

my $src = AdstreamTest::Broker->start(topics => [ 'ads:4', 'orders:2' ]);
my $pinot = AdstreamTest::Broker->start(topics => [ 'adstream.ad_stats:4', 'adstream.attributed_orders:2' ]);
# The copy takes over the original's records: same node name, same settings.
my %conf = (
	'adstream.node_name' => "'eu1'",
	'adstream.batch_max_messages' => 500,
	'adstream.attribution_max_wait' => "'10s'");
my $orig = AdstreamTest::node('original', %conf);
$orig->safe_psql('postgres', $_) for (
	"SELECT adstream.create_sink('pinot', '$pinot->{bootstrap}')",
	"SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads', options => '{\"workers\": 2}')",
	"SELECT adstream.create_source('shop', '$src->{bootstrap}', 'orders', 'orders')");

# Two loads with orders.  The second one's events come later in event time,
# so that its orders wait for its own clicks.
sub load
{
	my (%o) = @_;
	return AdstreamTest::loadgen($src, topic => 'ads', count => $o{count}, seed => $o{seed},
		start_ms => $o{start_ms}, background => $o{background},
		args => [ '--orders-topic', 'orders', '--orders', $o{count} / 5, @{ $o{args} // [] } ]);
}
sub orders_sent { my ($run) = @_; return (${ $run->{out} } =~ /orders_sent=(\d+)/)[0]; }

# 1. The first load settles on the original: counted, orders credited,
# everything published.
my $run1 = load(count => 6000, seed => 9501);
AdstreamTest::wait_consumed($orig, 'ads', $run1->{sent});
AdstreamTest::wait_consumed($orig, 'shop', orders_sent($run1));
$orig->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die;
AdstreamTest::wait_published($orig);

# 2. The second load flows; the dump is taken in the middle of its events.
my $run2 = load(count => 20000, seed => 9502, start_ms => $AdstreamTest::START_MS + 700_000,
	background => 1, args => [ '--rate', 1500 ]);
my $mid = $run1->{sent} + 4000;
$orig->poll_query_until('postgres',
	"SELECT coalesce(sum(next_offset), 0) >= $mid FROM adstream.offsets WHERE source = 'ads'") or die;
my $dump = PostgreSQL::Test::Utils::tempdir() . '/adstream.dump';
command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $orig->connstr('postgres') ], 'pg_dump while ingestion runs');
my $after_dump = $orig->safe_psql('postgres', "SELECT sum(next_offset) FROM adstream.offsets WHERE source = 'ads'");
cmp_ok($after_dump, '<', $run1->{sent} + 20000, "the dump was taken mid-stream ($after_dump messages consumed when it ended)");
# The original goes on consuming and publishing until it is stopped below.
# As if that went on for long, its versions move far past the
# dump's: what it publishes from now on must not win over the copy's records.
$orig->safe_psql('postgres', "SELECT setval('adstream.record_version_seq', nextval('adstream.record_version_seq') + 100000000)");

# 3. A fresh cluster on the same broker: the dump into its workers' database,
# table by table as pg_restore does by default, and in one transaction into
# a scratch database that shows what the dump holds.  The restore list leaves
# out the indexes of the partitions of ad_stats_minute and ad_events, which
# attaching them to their parents (created by CREATE EXTENSION, indexes
# included) has already built (README, "Dump and restore").
my $copy = AdstreamTest::node('restored', %conf, create_extension => 0);
$copy->safe_psql('postgres', 'CREATE DATABASE dumped');
my ($toc, $toc_err) = ('', '');
IPC::Run::run([ 'pg_restore', '-l', $dump ], '>', \$toc, '2>', \$toc_err) or die "pg_restore -l: $toc_err";
my $list = "$dump.list";
PostgreSQL::Test::Utils::append_to_file($list,
	join('', grep { !/^\d+; \d+ \d+ (?:CONSTRAINT|INDEX|INDEX ATTACH) adstream (?:ad_stats_minute|ad_events)_p\d/ }
		  split /^/, $toc));
command_ok([ 'pg_restore', '--exit-on-error', '-L', $list, '-d', $copy->connstr('postgres'), $dump ],
	'pg_restore into a fresh cluster');
command_ok([ 'pg_restore', '--exit-on-error', '--single-transaction', '-L', $list, '-d', $copy->connstr('dumped'), $dump ],
	'and into a scratch database');
my ($unindexed, $partitions) = split /\|/, $copy->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = i.inhrelid AND x.indisvalid)),
	   count(*)
  FROM pg_inherits i
 WHERE i.inhparent IN ('adstream.ad_stats_minute'::regclass, 'adstream.ad_events'::regclass)});
ok($partitions > 0 && $unindexed == 0,
	"each of the $partitions restored partitions of ad_stats_minute and ad_events has its index, attached and valid");

# What no worker may change before adoption, and what the dump must hold.
my $holdings = q{
SELECT (SELECT string_agg(source || ':' || partition || ':' || next_offset, ',' ORDER BY source, partition)
		  FROM adstream.offsets),
	   (SELECT count(*) || ' minutes, ' || coalesce(sum(impressions + clicks), 0) || ' events' FROM adstream.ad_stats_minute),
	   (SELECT count(*) FROM adstream.rejected_events),
	   (SELECT count(*) FROM adstream.dedup_log),
	   (SELECT count(*) FROM adstream.ad_events),
	   (SELECT count(*) FROM adstream.orders),
	   (SELECT count(*) FROM adstream.attributed_orders),
	   (SELECT count(*) FROM adstream.outbox)};
my $dumped = $copy->safe_psql('dumped', $holdings);
my (undef, undef, $dead, $dedup, $clicks, $orders, $credited) = split /\|/, $dumped;
ok($dead > 0, "the dump holds the dead letters ($dead)");
ok($dedup > 0 && $clicks > 0, "the dump holds the dedup state ($dedup dedup_log rows) and the clicks kept for attribution ($clicks)");
ok($orders > 0 && $credited > 0, "the dump holds the orders ($orders) and their attribution ($credited credited)");

# The launcher looks at the sources every second (adstream.launcher_naptime):
# give it three rounds to do what it must not.
sleep 3;
is($copy->safe_psql('postgres', $holdings), $dumped,
	'before adoption nothing was consumed on the copy: offsets and every table equal the dump');
is($copy->safe_psql('postgres', 'SELECT count(*) FROM adstream.worker_status()')
	  + $copy->safe_psql('postgres', 'SELECT count(*) FROM adstream.publisher_status()'),
	0, 'no worker ran on the copy');
is($copy->safe_psql('postgres',
		"SELECT string_agg(DISTINCT source_state || '/' || worker_state, ',') FROM adstream.source_status"),
	'held/held', 'source_status shows the restored sources as held');
is($copy->safe_psql('postgres', "SELECT sink_state || '/' || worker_state FROM adstream.sink_status"),
	'held/held', 'sink_status shows the restored sink as held');
like($copy->safe_psql('postgres', 'SELECT string_agg(DISTINCT last_error, \',\') FROM adstream.source_status'),
	qr/adstream\.adopt_restored\(\)/, 'with a hint that names adopt_restored');

# 4. The original stops for good, part of the way through the second load;
# the copy is adopted and takes over.
my $at_stop = $orig->safe_psql('postgres', "SELECT sum(next_offset) FROM adstream.offsets WHERE source = 'ads'");
cmp_ok($at_stop, '<', $run1->{sent} + 20000, "the original consumed past the dump ($at_stop messages), not to the end");
$orig->stop;
my ($rc, $adopted, $err) = $copy->psql('postgres', 'SELECT adstream.adopt_restored()');
is($adopted, '3', 'adopt_restored adopts the two sources and the sink') or diag $err;
AdstreamTest::finish_loadgen($run2);
my $events = $run1->{sent} + $run2->{sent};
my $all_orders = orders_sent($run1) + orders_sent($run2);
AdstreamTest::wait_consumed($copy, 'ads', $events);
AdstreamTest::wait_consumed($copy, 'shop', $all_orders);
$copy->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die;
AdstreamTest::wait_published($copy);

my @truth = ($run1->{truth}, $run2->{truth});
AdstreamTest::check_truth($copy, \@truth, 'restored copy', source => 'ads');
AdstreamTest::check_orders($copy, \@truth, 'shop', 'restored copy');
AdstreamTest::check_pinot($copy, $pinot, 'restored copy');

$copy->stop;
$_->stop for ($src, $pinot);
done_testing();
