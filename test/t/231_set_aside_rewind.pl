# A rewind holds its source's expiry until the replay has read its rewound
# partitions again (architecture.md point 12: the rewind sets their
# max_event_ts to NULL, so that an event inside the horizon when its copy is
# replayed is judged as it was the first time, a duplicate).  An event set
# aside on a rewound partition must not end that hold (review of e4ad032): the
# first batch after the rewind takes it up, and its time must not become the
# partition's watermark, or expiry, run before the replay reads the rest,
# gives up hours the replay still judges, and a 'recount' counts their
# events again.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'rw:1' ]);
my $node = AdstreamTest::node('set_aside_rewind', 'adstream.dedup_horizon' => "'1min'");
$PostgreSQL::Test::Utils::timeout_default = 60;

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $now = time();

sub event
{
	my ($n, $age) = @_;
	return sprintf(qq({"event_id":"00000000-0000-4000-8000-%012d","type":"impression","ad_id":7,"campaign_id":1,"user_id":1,"store_id":1,"ts":%d}\n),
		$n, ($now - $age) * 1000);
}

sub produce
{
	my (@events) = @_;
	my $in = join('', @events);
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'rw', '-p', 0 ], \$in)
	  or die 'kcat failed';
}

sql("SELECT adstream.create_source('s', '$broker->{bootstrap}', 'rw')");
# Two events two hours old, then one ten seconds old.
produce(event(1, 7200), event(2, 7200), event(3, 10));
AdstreamTest::wait_consumed($node, 's', 3);
# A copy of event 4 (ten seconds old) set aside on the partition, as a batch
# leaves it when another worker's batch holds its id; not taken up yet (the
# worker looked at start).  Expiry has not run: the old events' hour is kept.
sql(q{
INSERT INTO adstream.set_aside (source_id, partition, "offset", event_id, type, ad_id, campaign_id, user_id, store_id, ts, payload)
SELECT id, 0, 1, '00000000-0000-4000-8000-000000000004', 'impression', 7, 1, 1, 1, now() - interval '10 s', '\x7b7d'
  FROM adstream.sources WHERE name = 's';
});

# The replay's batches fail until the test lets them through; a batch that
# moves no offset (the take-up of the event set aside) goes through.
sql(q{
CREATE TABLE public.ctl (fail boolean NOT NULL);
INSERT INTO public.ctl VALUES (true);
CREATE FUNCTION public.hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.next_offset > OLD.next_offset AND (SELECT fail FROM public.ctl) THEN
		RAISE EXCEPTION 'replay held by the test';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER hold BEFORE UPDATE ON adstream.offsets FOR EACH ROW EXECUTE FUNCTION public.hold();
});

my $id = sql(q{SELECT adstream.rewind_source('s', to_offsets => '{"0": 0}')});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.set_aside'),
	'the first batch after the rewind takes up the event set aside');
$node->poll_query_until('postgres',
	q{SELECT EXISTS (SELECT 1 FROM adstream.worker_status() WHERE last_error LIKE '%replay held%')})
  or die 'the replay did not start';

# Expiry runs while the replay has not read the old events again.
sql('SELECT adstream.expire_dedup_state()');
is(sql(q{SELECT dedup_expired_before <= to_timestamp(} . ($now - 7200) . q{) FROM adstream.sources WHERE name = 's'}), 't',
	"expiry keeps the old events' hour while the replay has not read them again");

sql('UPDATE public.ctl SET fail = false');
$node->poll_query_until('postgres',
	"SELECT bool_and(rewind_finished_at IS NOT NULL) FROM adstream.rewind_status WHERE rewind_id = $id")
  or die 'the rewind did not finish';
is(sql("SELECT sum(accepted) || '/' || sum(duplicates) FROM adstream.rewind_status WHERE rewind_id = $id"), '0/3',
	'the replay finds every event a duplicate');
is(sql('SELECT sum(impressions) FROM adstream.ad_stats_minute'), '4', 'each of the four events counts once');

$node->stop;
$broker->stop;
done_testing();
