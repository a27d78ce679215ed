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

my $broker = AdstreamTest::Broker->start(topics => ['ads:4']);
my $node = AdstreamTest::node('outage', 'adstream.batch_max_messages' => 500);
$node->safe_psql('postgres',
	"SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 2}')");

my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 30000, seed => 7,
	args => [ '--rate', 8000 ], background => 1);
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
my $twice = AdstreamTest::written_twice($broker, 'ads', $run->{sent});
note("the broker stored $twice writes twice") if $twice;
AdstreamTest::wait_consumed($node, 's', $run->{sent} + $twice);
AdstreamTest::check_truth($node, [ $run->{truth} ], 'after broker outage', twice => $twice);
ok($node->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'consuming' AND connected
	AND last_error IS NULL AND lag = 0 AND NOT lag_stale) FROM adstream.source_status}),
	'source_status after the outage: consuming, the error cleared, lag 0 and current');

unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/password|secret/i, 'no credentials in the log');
$node->stop;
$broker->stop;
done_testing();
