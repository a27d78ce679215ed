# The broker goes away mid-stream and comes back: consumption stalls without
# errors in the results, source_status says the workers are disconnected,
# the server still shuts down promptly, and after the broker returns the
# totals equal the ground truth exactly and the error is cleared.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;
use Time::HiRes qw(time);

my $broker = AdstreamTest::Broker->start(topics => [ 'ads:4', 'probe:1' ]);

# How copies are told apart, on a topic where one is made on purpose: a
# message sent again with its send's header is a copy, the same bytes under
# another send's header are a duplicate sent on purpose, and a message
# without the header is never a copy.
for my $send ([ 'a', 'x' ], [ 'a', 'x' ], [ 'a', 'y' ], [ 'a', undef ])
{
	my ($value, $seq) = @$send;
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'probe', '-p', '0',
		defined $seq ? ('-H', "adstream-seq=$seq") : () ], '<', \$value)
	  or die 'kcat failed';
}
is_deeply(AdstreamTest::broker_copies($broker, 'probe', 3), [ 'probe 0 1' ],
	'a message sent again under its header is found as the copy, at its offset');
my $node = AdstreamTest::node('outage', 'adstream.batch_max_messages' => 500);
$node->safe_psql('postgres',
	"SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 2}')");

# (each send named by a header, so that a write the broker stores twice is
# told apart from a duplicate sent on purpose)
my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 30000, seed => 7,
	args => [ '--rate', 8000, '--seq-headers' ], background => 1);
$node->poll_query_until('postgres', "SELECT coalesce(sum(next_offset), 0) > 5000 FROM adstream.offsets")
  or die;

$broker->cmd('down all');
sleep 2;
my $stalled = $node->safe_psql('postgres', 'SELECT sum(next_offset) FROM adstream.offsets');
sleep 2;
is($node->safe_psql('postgres', 'SELECT sum(next_offset) FROM adstream.offsets'),
	$stalled, 'nothing is committed while the broker is down');
is($node->safe_psql('postgres', 'SELECT count(*) FROM adstream.worker_status() WHERE pid IS NOT NULL'),
	2, 'workers stay up while the broker is down');
# ... and say so (issue #14): not "consuming" with a lag of 0.
ok($node->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'disconnected' AND NOT connected
	AND last_error IS NOT NULL AND lag_stale) FROM adstream.source_status}),
	'source_status: disconnected, with the error, the lag flagged stale');

# Workers waiting on a dead broker still answer SIGTERM at once.
my $t0 = time();
$node->restart;
my $restart = time() - $t0;
cmp_ok($restart, '<', 5, sprintf('fast restart with the broker down takes %.2f s', $restart));

$broker->cmd('up all');
AdstreamTest::finish_loadgen($run);
# A write the producer retried across the outage may be stored twice by the
# mock broker: a valid event is then a duplicate, a bad message a second
# dead letter (at another offset).
my $copies = AdstreamTest::broker_copies($broker, 'ads', $run->{sent});
note('the broker stored ' . scalar(@$copies) . ' writes twice') if @$copies;
AdstreamTest::wait_consumed($node, 's', $run->{sent} + @$copies);
AdstreamTest::check_truth($node, [ $run->{truth} ], 'after broker outage', copies => $copies);
ok($node->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'consuming' AND connected
	AND last_error IS NULL AND lag = 0 AND NOT lag_stale) FROM adstream.source_status}),
	'source_status after the outage: consuming, the error cleared, lag 0 and current');

unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/password|secret/i, 'no credentials in the log');
$node->stop;
$broker->stop;
done_testing();
