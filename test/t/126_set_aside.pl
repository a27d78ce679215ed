# Events set aside (issue #12; docs/architecture.md, point 5).  Worker 0's
# batch claims an event id and is held open (a trigger on dedup_log waits
# for an advisory lock the test holds); worker 1 reads a copy of the same
# event on its partition.  It must not wait: it commits its batch with the
# copy set aside in adstream.set_aside, counted neither as accepted nor as a
# duplicate, while expiry keeps the copy's hour and attribution's watermark
# stays below it.  Then, once the holder:
#   A. commits: the copy is judged again, a duplicate;
#   B. rolls back: the copy is judged again and counted, once (the holder's
#      retry then finds it a duplicate);
#   C. dies in a crash: the copy waits in the table through the restart,
#      and the event counts once.
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
# test's lock, and fail while public.ctl says so.
$sa->install_hold(42);

$sa->create_source;
# Both partitions read, ten seconds ago, and the hour of the held events created.
$sa->warm_up;

my $locker = AdstreamSetAside::Locker->start($node, 42);

# ---- A. the holder commits -------------------------------------------------
$locker->lock;
$sa->hold_and_copy(1, 2);
pass('worker 1 committed its batch while worker 0 held the id: it did not wait');
is(sql(q{SELECT string_agg(format('%s:%s:%s', partition, "offset", event_id), ',') FROM adstream.set_aside}),
	'1:1:00000000-0000-4000-8000-000000000001', 'the copy is set aside, with its partition and offset');
is($sa->offsets, '0:2/2/0 1:2/1/0', 'counted neither as accepted nor as a duplicate meanwhile (partition 0 still at 2)');
is(sql(q{SELECT adstream.ad_events_watermark() < now() - interval '3 hours'}), 't',
	'attribution waits for it: the watermark stays below its time');
is(sql(q{SELECT m.expired_before <= date_trunc('hour', now() - interval '3 hours')
		   FROM adstream._dedup_expiry_marks() m JOIN adstream.sources s ON s.id = m.source_id WHERE s.name = 's'}), 't',
	'expiry keeps its hour (a 1 min horizon would give it up)');
# While the holder runs, worker 1 looks again and puts the copy back, each
# time in a transaction of its own: sampled every 100 ms for 3 s, the row's
# version changes at most a few times (the retry backs off from 20 ms to
# 1 s), not at every sample (every 20 ms).
my %versions;
for (1 .. 30)
{
	$versions{ sql('SELECT xmin FROM adstream.set_aside') } = 1;
	select(undef, undef, undef, 0.1);
}
cmp_ok(scalar(keys %versions), '<=', 12, 'a copy whose holder still runs is looked at again less and less often');
$locker->unlock;
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.set_aside'), 'judged again once the holder ended');
AdstreamTest::wait_consumed($node, 's', 5);
is($sa->offsets, '0:3/3/0 1:2/1/1', 'the holder committed: the copy is a duplicate');
is(sql(q{SELECT sum(impressions) FROM adstream.ad_stats_minute WHERE ad_id = 7 AND window_start = date_bin('1 minute', to_timestamp(} . ($sa->now - 3 * 3600) . q{), 'epoch')}),
	'1', 'the event counts once');

# ---- B. the holder rolls back ------------------------------------------------
$locker->lock;
$sa->hold_and_copy(2, 3);
is(sql('SELECT count(*) FROM adstream.set_aside'), '1', 'the second copy is set aside');
sql('UPDATE public.ctl SET fail = true');
$locker->unlock;
# Worker 0's batch fails (and keeps failing); worker 1 finds the id unclaimed.
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.set_aside'), 'judged again once the holder rolled back');
like($sa->offsets, qr/ 1:3\/2\/1$/, 'and counted by worker 1');
like(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/injected failure of the holding batch/,
	"worker 0's batch rolled back");
sql('UPDATE public.ctl SET fail = false');
AdstreamTest::wait_consumed($node, 's', 7);
is($sa->offsets, '0:4/3/1 1:3/2/1', "worker 0's retry finds it a duplicate");

# ---- C. the holder dies in a crash -------------------------------------------
$locker->lock;
$sa->hold_and_copy(3, 4);
is(sql('SELECT count(*) FROM adstream.set_aside'), '1', 'the third copy is set aside');
$locker->quit;
$node->stop('immediate');
$node->start;
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.set_aside'), 'after the restart it is judged again');
AdstreamTest::wait_consumed($node, 's', 9);
is(sql(q{SELECT sum(accepted) || '/' || sum(duplicates) FROM adstream.offsets WHERE source = 's'}), '6/3',
	'six distinct events counted once each, three copies duplicates');
is(sql(q{SELECT sum(impressions) FROM adstream.ad_stats_minute}), '6', 'the counts agree');

done_testing();
