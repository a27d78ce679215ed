# Events set aside must not be forgotten by a worker that starts while the
# broker does not answer (review of e4ad032).  A worker looks for events set
# aside for it once at start (aside_due); if that first look comes before it
# knows its partitions (no metadata yet: the broker is down), it looked at
# no partition, yet it cleared aside_due, and nothing set it again: the copy
# stays in adstream.set_aside for ever, holding expiry and the attribution
# watermark with it, and the event is never judged.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use AdstreamSetAside;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'aside:2' ]);
my $node = AdstreamTest::node('set_aside', 'adstream.dedup_horizon' => '1min');

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $sa = AdstreamSetAside->new(broker => $broker, node => $node);

# Batches of worker 0 whose ids include one of the held ids wait for the
# test's lock.
$sa->install_hold(42);

$sa->create_source;
# Both partitions read, ten seconds ago, and the hour of the held events created.
$sa->warm_up;

my $locker = AdstreamSetAside::Locker->start($node, 42);

$locker->lock;
$sa->hold_and_copy(1, 2);
is(sql('SELECT count(*) FROM adstream.set_aside'), '1', 'the copy is set aside');
$locker->quit;
$node->stop('immediate');

# The workers start while the broker is down: they know no partition yet.
$broker->cmd('down all');
$node->start;
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM adstream.worker_status() WHERE pid IS NOT NULL})
  or die 'workers did not start';
sleep 3;
$broker->cmd('up all');
# Within 30 s (a worker with events waiting looks every 20 ms).
$PostgreSQL::Test::Utils::timeout_default = 30;

ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.set_aside'),
	'once the broker is back, the copy is judged again');
AdstreamTest::wait_consumed($node, 's', 5);
# The holder's batch died with the stop: whichever of its re-read and the
# copy is judged first counts the event, the other is a duplicate.
like($sa->offsets, qr/^(0:3\/3\/0 1:2\/1\/1|0:3\/2\/1 1:2\/2\/0)$/,
	'the event counted once (by the holder or by the copy), the other a duplicate');
is(sql(q{SELECT adstream.ad_events_watermark() > now() - interval '1 hour'}), 't',
	'and the attribution watermark is no longer held');

$node->stop;
$broker->stop;
done_testing();
