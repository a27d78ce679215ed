# Attribution under crashes: a seeded stream of ad events followed by orders
# (with duplicates and bad orders); while the orders are consumed and judged,
# kill -9 the orders worker and then stop the server immediately.  After
# restart every order, its attribution and its record UUID must equal the
# generator's ground truth.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'ads:4', 'orders:2' ]);
my $node = AdstreamTest::node('attrcrash',
	'adstream.batch_max_messages' => 300,
	'adstream.attribution_max_wait' => "'20s'");
$node->safe_psql('postgres', qq{
SELECT adstream.create_source('ads', '$broker->{bootstrap}', 'ads', options => '{"workers": 2}');
SELECT adstream.create_source('shop', '$broker->{bootstrap}', 'orders', 'orders');});

my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 31, background => 1,
	args => [ '--users', 2000, '--stores', 50, '--orders-topic', 'orders', '--orders', 6000,
		'--rate', 6000 ]);

# Once orders are being judged, crash the orders worker, then the server.
$node->poll_query_until('postgres',
	"SELECT count(*) > 300 FROM adstream.orders WHERE status <> 'waiting'")
  or die 'no orders judged: ' . $node->safe_psql('postgres', 'TABLE adstream.source_status');
my @pids = AdstreamTest::worker_pids($node, 'shop');
ok(@pids == 1, 'the orders worker is running');
kill 'KILL', $pids[0];
$node->poll_query_until('postgres',
	"SELECT count(*) > 2000 FROM adstream.orders WHERE status <> 'waiting'")
  or die 'orders stopped being judged after the kill: '
  . $node->safe_psql('postgres', 'SELECT status, count(*) FROM adstream.orders GROUP BY 1; TABLE adstream.source_status');
$node->stop('immediate');
$node->start;

AdstreamTest::finish_loadgen($run);
my ($orders_sent) = ${ $run->{out} } =~ /orders_sent=(\d+)/ or die 'no orders in the loadgen summary';
AdstreamTest::wait_consumed($node, 'ads', $run->{sent});
AdstreamTest::wait_consumed($node, 'shop', $orders_sent);
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders')
  or die 'orders still waiting: ' . $node->safe_psql('postgres', 'SELECT count(*) FROM adstream.waiting_orders');

AdstreamTest::check_truth($node, [ $run->{truth} ], 'ad events', source => 'ads');
AdstreamTest::check_orders($node, [ $run->{truth} ], 'shop', 'after kill -9 and immediate stop');
like(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/terminated by signal 9/, 'the kill -9 crashed a worker');

$node->stop;
$broker->stop;
done_testing();
