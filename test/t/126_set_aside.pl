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
use IPC::Run;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'aside:2' ]);
my $node = AdstreamTest::node('set_aside', 'adstream.dedup_horizon' => '1min');

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $now = time();

# An impression of ad $ad (7 by default); its id ends in $n; $age seconds
# before the test began.
sub event
{
	my ($n, $age, $ad) = @_;
	return sprintf(qq({"event_id":"00000000-0000-4000-8000-%012d","type":"impression","ad_id":%d,"campaign_id":1,"user_id":1,"store_id":1,"ts":%d}\n),
		$n, $ad // 7, ($now - $age) * 1000);
}

sub produce
{
	my ($partition, @events) = @_;
	my $in = join('', @events);
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'aside', '-p', $partition ], \$in)
	  or die 'kcat failed';
}

sub offsets
{
	return sql(q{SELECT string_agg(format('%s:%s/%s/%s', partition, next_offset, accepted, duplicates), ' ' ORDER BY partition)
				   FROM adstream.offsets WHERE source = 's'});
}

# Batches of worker 0 whose ids include one of the held ids wait for the
# test's lock, and fail while public.ctl says so.
sql(q{
CREATE TABLE public.ctl (held bytea[] NOT NULL, fail boolean NOT NULL);
INSERT INTO public.ctl VALUES ('{}', false);
CREATE FUNCTION public.hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM public.ctl, unnest(held) h WHERE position(h IN NEW.ids) > 0)
	   AND pg_backend_pid() = (SELECT pid FROM adstream.worker_status() WHERE worker_index = 0) THEN
		PERFORM pg_advisory_xact_lock_shared(42);
		IF (SELECT fail FROM public.ctl) THEN
			RAISE EXCEPTION 'injected failure of the holding batch';
		END IF;
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER hold BEFORE INSERT ON adstream.dedup_log FOR EACH ROW EXECUTE FUNCTION public.hold();
});

sql("SELECT adstream.create_source('s', '$broker->{bootstrap}', 'aside', options => '{\"workers\": 2}')");
# Both partitions read first, ten seconds ago, so that their watermarks are
# well past the events below, which are three hours old; and one event of
# that hour (of another ad), so that its partitions exist (a batch that
# creates them holds a lock until it commits, which would stall worker 1).
produce(0, event(99, 3 * 3600, 8), event(100, 10));
produce(1, event(101, 10));
AdstreamTest::wait_consumed($node, 's', 3);

my ($in, $out, $err) = ('', '', '');
my $locker = IPC::Run::start([ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
sub lock42 { $out = ''; $in .= "SELECT pg_advisory_lock(42), 'locked';\n"; $locker->pump until $out =~ /locked/; }
sub unlock42 { $out = ''; $in .= "SELECT pg_advisory_unlock(42), 'unlocked';\n"; $locker->pump until $out =~ /unlocked/; }

# Worker 0 claims event $n and waits on the lock; then worker 1 reads a copy.
sub hold_and_copy
{
	my ($n, $p1_next) = @_;
	my $hex = sprintf('%012d', $n);
	sql("UPDATE public.ctl SET held = ARRAY[decode('00000000000040008000$hex', 'hex')]");
	produce(0, event($n, 3 * 3600));
	$node->poll_query_until('postgres',
		q{SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)})
	  or die 'worker 0 did not reach the held claim';
	produce(1, event($n, 3 * 3600));
	$node->poll_query_until('postgres',
		"SELECT next_offset = $p1_next FROM adstream.offsets WHERE source = 's' AND partition = 1")
	  or die 'worker 1 did not commit its batch';
}

# ---- A. the holder commits -------------------------------------------------
lock42();
hold_and_copy(1, 2);
pass('worker 1 committed its batch while worker 0 held the id: it did not wait');
is(sql(q{SELECT string_agg(format('%s:%s:%s', partition, "offset", event_id), ',') FROM adstream.set_aside}),
	'1:1:00000000-0000-4000-8000-000000000001', 'the copy is set aside, with its partition and offset');
is(offsets(), '0:2/2/0 1:2/1/0', 'counted neither as accepted nor as a duplicate meanwhile (partition 0 still at 2)');
is(sql(q{SELECT adstream.ad_events_watermark() < now() - interval '3 hours'}), 't',
	'attribution waits for it: the watermark stays below its time');
is(sql(q{SELECT m.expired_before <= date_trunc('hour', now() - interval '3 hours')
		   FROM adstream._dedup_expiry_marks() m JOIN adstream.sources s ON s.id = m.source_id WHERE s.name = 's'}), 't',
	'expiry keeps its hour (a 1 min horizon would give it up)');
unlock42();
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.set_aside'), 'judged again once the holder ended');
AdstreamTest::wait_consumed($node, 's', 5);
is(offsets(), '0:3/3/0 1:2/1/1', 'the holder committed: the copy is a duplicate');
is(sql(q{SELECT sum(impressions) FROM adstream.ad_stats_minute WHERE ad_id = 7 AND window_start = date_bin('1 minute', to_timestamp(} . ($now - 3 * 3600) . q{), 'epoch')}),
	'1', 'the event counts once');

# ---- B. the holder rolls back ------------------------------------------------
lock42();
hold_and_copy(2, 3);
is(sql('SELECT count(*) FROM adstream.set_aside'), '1', 'the second copy is set aside');
sql('UPDATE public.ctl SET fail = true');
unlock42();
# Worker 0's batch fails (and keeps failing); worker 1 finds the id unclaimed.
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.set_aside'), 'judged again once the holder rolled back');
like(offsets(), qr/ 1:3\/2\/1$/, 'and counted by worker 1');
like(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/injected failure of the holding batch/,
	"worker 0's batch rolled back");
sql('UPDATE public.ctl SET fail = false');
AdstreamTest::wait_consumed($node, 's', 7);
is(offsets(), '0:4/3/1 1:3/2/1', "worker 0's retry finds it a duplicate");

# ---- C. the holder dies in a crash -------------------------------------------
lock42();
hold_and_copy(3, 4);
is(sql('SELECT count(*) FROM adstream.set_aside'), '1', 'the third copy is set aside');
$in .= "\\q\n";
$locker->finish;
$node->stop('immediate');
$node->start;
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.set_aside'), 'after the restart it is judged again');
AdstreamTest::wait_consumed($node, 's', 9);
is(sql(q{SELECT sum(accepted) || '/' || sum(duplicates) FROM adstream.offsets WHERE source = 's'}), '6/3',
	'six distinct events counted once each, three copies duplicates');
is(sql(q{SELECT sum(impressions) FROM adstream.ad_stats_minute}), '6', 'the counts agree');

done_testing();
