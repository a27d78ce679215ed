# Crash safety: while a stream is being produced, kill -9 a consumer worker
# (the postmaster then restarts every backend), then stop the whole server
# with an immediate shutdown and start it again.  After each of three rounds
# the aggregates, dead letters and counters must equal the ground truth
# exactly: nothing lost, nothing counted twice.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;
use Time::HiRes qw(usleep);

my $broker = AdstreamTest::Broker->start(topics => ['ads:4']);
# Small batches, so that a crash lands between many commits.
my $node = AdstreamTest::node('crash', 'adstream.batch_max_messages' => 500);
$node->safe_psql('postgres',
	"SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 2}')");

my (@truths, $total);
$total = 0;
for my $round (1 .. 3)
{
	my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 24000, seed => 100 + $round,
		args => [ '--rate', 8000 ], background => 1);

	# Once the stream is flowing, kill one consumer worker.
	$node->poll_query_until('postgres',
		"SELECT coalesce(sum(next_offset), 0) > $total + 4000 FROM adstream.offsets") or die;
	my @pids = AdstreamTest::worker_pids($node, 's');
	ok(@pids >= 1, "round $round: consumer workers are running");
	kill 'KILL', $pids[0];
	note "round $round: killed worker $pids[0]";

	# After the crash restart, let it make progress, then stop immediately.
	$node->poll_query_until('postgres',
		"SELECT coalesce(sum(next_offset), 0) > $total + 12000 FROM adstream.offsets") or die;
	$node->stop('immediate');
	$node->start;

	AdstreamTest::finish_loadgen($run);
	push @truths, $run->{truth};
	$total += $run->{sent};
	AdstreamTest::wait_consumed($node, 's', $total);
	AdstreamTest::check_truth($node, \@truths, "round $round (kill -9 + immediate stop)");
}

like(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/terminated by signal 9/, 'the kill -9 really crashed a worker');
$node->stop;
$broker->stop;
done_testing();
