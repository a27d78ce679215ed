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


lock42();
hold_and_copy(1, 2);
is(sql('SELECT count(*) FROM adstream.set_aside'), '1', 'the copy is set aside');
$in .= "\\q\n";
$locker->finish;
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
like(offsets(), qr/^(0:3\/3\/0 1:2\/1\/1|0:3\/2\/1 1:2\/2\/0)$/,
	'the event counted once (by the holder or by the copy), the other a duplicate');
is(sql(q{SELECT adstream.ad_events_watermark() > now() - interval '1 hour'}), 't',
	'and the attribution watermark is no longer held');

$node->stop;
$broker->stop;
done_testing();
