# A publisher that starts while its sink's Kafka cluster is unreachable
# retries rd_kafka_init_transactions().  When the postmaster is killed then,
# the publisher must exit too: before the fix (found by the soak) it stayed
# behind as an orphan attached to the shared memory, and the server could
# not start again ("pre-existing shared memory block ... is still in use")
# until the sink returned or someone killed the orphan.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use AdstreamSoak;
use Test::More;
use Time::HiRes qw(time usleep);

my $sink = AdstreamTest::Broker->start(topics => [ 'adstream.ad_stats:1', 'adstream.attributed_orders:1' ]);
my $node = AdstreamTest::node('pmdeath');
$sink->cmd('down all');
$node->safe_psql('postgres', "SELECT adstream.create_sink('s', '$sink->{bootstrap}')");
$node->poll_query_until('postgres',
	"SELECT worker_state = 'connecting' FROM adstream.sink_status WHERE sink = 's'") or die;
my ($pid) = $node->safe_psql('postgres', "SELECT worker_pid FROM adstream.sink_status WHERE sink = 's'");
note "publisher pid $pid is connecting to a sink that is down";

$node->kill9;
my $t = time();
usleep(100_000) while time() < $t + 20 && kill(0, $pid);
ok(!kill(0, $pid), 'the publisher exits within 20 s of the postmaster\'s death');
if (kill 0, $pid)
{
	note 'orphan: ' . AdstreamSoak::proc_title($pid);
	kill 'KILL', $pid;
	usleep(100_000) while kill 0, $pid;
}
$sink->cmd('up all');
AdstreamSoak::start_node($node);
$node->stop;
$sink->stop;
done_testing();
