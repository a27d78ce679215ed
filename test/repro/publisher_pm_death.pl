# Reproduction of a bug the soak found (not part of make test; it fails
# until the bug is fixed):
#   make tapcheck PROVE_TESTS=test/repro/publisher_pm_death.pl
#
# A publisher that starts while its sink's Kafka cluster is unreachable
# loops in rd_kafka_init_transactions() (src/publisher.c) and checks for
# interrupts only, never for postmaster death.  When the postmaster is
# killed then, the publisher stays behind as an orphan attached to the
# shared memory, and the server cannot start again ("pre-existing shared
# memory block ... is still in use") until the sink returns or someone
# kills the orphan.
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
