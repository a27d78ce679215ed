# drop_source must not deadlock with a batch that takes up events set aside
# (review of e4ad032).  drop_source deletes the source, and with it (ON
# DELETE CASCADE) its offsets, then its rows of adstream.set_aside.  A batch
# that has taken (deleted) set-aside rows of its partition holds their row
# locks, then updates its partition's offsets at its end: it waits for
# drop_source's delete of those offsets while drop_source waits for its rows
# of set_aside.  Before set_aside, a batch locked nothing drop_source deletes
# before its offsets (architecture.md: the offsets come last for this), and
# drop_source simply waited for it.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use AdstreamSetAside;
use IPC::Run;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'aside:2' ]);
# The deadlock detector runs in whichever waiter's deadlock_timeout expires
# first once the cycle exists: drop_source's (it waits first), whose victim it
# then is.  A long timeout makes that deterministic.
my $node = AdstreamTest::node('set_aside_drop', deadlock_timeout => "'5s'");

$PostgreSQL::Test::Utils::timeout_default = 60;

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $sa = AdstreamSetAside->new(broker => $broker, node => $node);

$sa->create_source;
$sa->read_one_each;

# An event set aside on partition 1 (below its stored offset), as a batch of
# worker 1 would have left it; worker 1 takes it up at its start.  Its take
# is held, with the row locked, by a trigger waiting for the test's lock.
sql(q{
CREATE FUNCTION public.hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_xact_lock_shared(43);
	RETURN OLD;
END $$;
CREATE TRIGGER hold BEFORE DELETE ON adstream.set_aside FOR EACH ROW EXECUTE FUNCTION public.hold();
});
$sa->insert_set_aside;

my $locker = AdstreamSetAside::Locker->start($node, 43);
$locker->lock;

# The workers restart (a new generation): worker 1 looks for events set aside.
$sa->pause;
sql(q{SELECT adstream.resume_source('s')});
$node->poll_query_until('postgres',
	q{SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)})
  or die 'worker 1 did not take up the set-aside event';

# drop_source waits for worker 1's batch (its row of set_aside) ...
my ($dout, $derr) = ('', '');
my $dropper = IPC::Run::start([ 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		'-c', "SELECT adstream.drop_source('s')" ], '<', \undef, '>', \$dout, '2>', \$derr);
$node->poll_query_until('postgres',
	q{SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%drop_source%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid())})
  or die "drop_source did not wait: $derr $dout " . sql('SELECT pid, wait_event_type, wait_event, state, query FROM pg_stat_activity');
# ... and the batch goes on to its end.
$locker->unlock;
$locker->quit;

$dropper->finish;
unlike($derr, qr/deadlock/, 'drop_source does not deadlock with a batch that took up set-aside events');
is($derr, '', 'drop_source succeeds');
is(sql(q{SELECT count(*) FROM adstream.sources WHERE name = 's'}), '0', 'the source is gone');
is(sql(q{SELECT count(*) FROM adstream.set_aside}), '0', 'and so are its events set aside');

$node->stop;
$broker->stop;
done_testing();
