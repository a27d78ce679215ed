# Rollups miss nothing: a batch that commits while refresh_rollups() runs,
# on a minute already pending, stays pending for the next refresh.
#
# Found by review: the batch's INSERT INTO rollup_pending ... ON CONFLICT DO
# NOTHING found the committed row and neither inserted nor locked it; the
# refresh deleted that row and recomputed the hour in a snapshot without the
# batch, so the hour, 6 h and day rollups missed it for good.  Now each
# worker writes its own pending rows again (a new version) and the refresh
# forgets only the row versions it read (docs/architecture.md, "Rollups").
#
# The window is between the batch's pending rows and its COMMIT (the last two
# things a batch does).  A test trigger that sleeps after that INSERT
# statement widens it to 3 s.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['ads:1']);
my $node = AdstreamTest::node('rollrace');
sub sql { return $node->safe_psql('postgres', $_[0]); }

my $minute_ms = (int(time() / 60) - 10) * 60000;    # ten minutes ago, on the minute
sub event
{
	my ($n) = @_;
	return sprintf('{"event_id": "00000000-0000-4000-8000-%012d", "type": "click", "ad_id": 1, '
		  . '"campaign_id": 2, "user_id": 3, "store_id": 4, "ts": %d}', $n, $minute_ms + 1000 * $n);
}

sql("SELECT adstream.create_source('ads', '$broker->{bootstrap}', 'ads')");

# The first click of the minute: the minute is now pending (not refreshed).
AdstreamTest::replay($broker, 'ads', [ [ 0, event(1) ] ]);
AdstreamTest::wait_consumed($node, 'ads', 1);
is(sql('SELECT count(*) FROM adstream.rollup_pending'), 1, 'the minute is pending');

# Test scaffolding only: stall a batch right after it queued its minutes.
sql(q{
CREATE TABLE public.review_stall_flag (x int);
CREATE FUNCTION public.review_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM public.review_stall_flag) THEN PERFORM pg_sleep(3); END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER review_stall AFTER INSERT ON adstream.rollup_pending
	FOR EACH STATEMENT EXECUTE FUNCTION public.review_stall();
INSERT INTO public.review_stall_flag VALUES (1);
});

# The second click of the same minute; refresh while its batch is between
# queueing the minute and committing.
AdstreamTest::replay($broker, 'ads', [ [ 0, event(2) ] ]);
$node->poll_query_until('postgres', q{SELECT EXISTS (SELECT 1 FROM pg_stat_activity
	WHERE backend_type = 'adstream consumer' AND wait_event = 'PgSleep')})
  or die 'the batch did not reach the stall';
is(sql('SELECT adstream.refresh_rollups()'), 1, 'refresh_rollups ran while the batch was about to commit');
AdstreamTest::wait_consumed($node, 'ads', 2);
sql('DELETE FROM public.review_stall_flag');

my $hour = "to_timestamp($minute_ms / 1000.0)";
my ($minutes, $hourly, $pending) = split /\|/, sql(qq{
SELECT (SELECT sum(clicks) FROM adstream.ad_stats_minute WHERE ad_id = 1),
       (SELECT sum(clicks) FROM adstream.ad_stats(date_trunc('hour', $hour at time zone 'UTC') at time zone 'UTC',
                                                  $hour + interval '1 hour', 'hour') WHERE ad_id = 1),
       (SELECT count(*) FROM adstream.rollup_pending)});
is($minutes, 2, 'ad_stats_minute has both clicks');
is($hourly, $minutes, "ad_stats(hour) equals the minutes it sums (hour: $hourly, minutes: $minutes, minutes pending: $pending)");
sql('SELECT adstream.refresh_rollups()');
is(sql(qq{SELECT sum(clicks) FROM adstream.ad_stats_hour WHERE ad_id = 1}), 2,
	'and a later refresh_rollups() puts it right (nothing left pending says otherwise)');

$broker->stop;
done_testing();
