# A day of minutes that retention dropped keeps its rollups: its events
# arriving later (after minute_retention was raised, from a new source's
# backfill, or in a batch racing the retention job) are too_late, and the day's
# partition of ad_stats_minute is never created again.
#
# Found by review: ensure_partitions() re-created the dropped day whenever a
# batch wrote a minute of it within adstream.minute_retention, and the next
# refresh_rollups(), which takes a day partition that exists for the whole of
# its minutes, deleted the hour, 6 h and day rollups of every other ad of the
# touched hours, the only record left of them.
#
# Here: minute_retention 30 d; source a counts an hour two days ago; the
# rollups are refreshed; retention lowered to 1 d drops that day's minutes
# (rollups kept); retention back to 30 d; source b (new, on another topic)
# sends one event of the same hour, for another ad.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'ev_a:1', 'ev_b:1' ]);
my $node = AdstreamTest::node('wipe', 'adstream.minute_retention' => 30 * 86400);
sub sql { return $node->safe_psql('postgres', $_[0]); }

my $hour_ms = (int(time() / 3600) - 48) * 3600000;    # an hour two days ago
sub event
{
	my ($n, $ad) = @_;
	return sprintf('{"event_id": "00000000-0000-4000-8000-%012d", "type": "impression", "ad_id": %d, '
		  . '"campaign_id": 2, "user_id": 3, "store_id": 4, "ts": %d}', $n, $ad, $hour_ms + 60000 * ($n % 60));
}
my $hour = "to_timestamp($hour_ms / 1000.0)";
sub hourly
{
	return sql(qq{SELECT coalesce(sum(impressions), 0) FROM adstream.ad_stats($hour, $hour + interval '1 hour', 'hour')});
}

sql("SELECT adstream.create_source('a', '$broker->{bootstrap}', 'ev_a')");
AdstreamTest::replay($broker, 'ev_a', [ map { [ 0, event($_, 100 + $_ % 10) ] } 1 .. 50 ]);
AdstreamTest::wait_consumed($node, 'a', 50);
sql('SELECT adstream.refresh_rollups()');
is(hourly(), 50, 'the hour\'s rollup holds the 50 impressions of source a');

# Retention drops that day's minutes; the rollups keep the hour.
sql("ALTER SYSTEM SET adstream.minute_retention = 86400; SELECT pg_reload_conf();");
sleep 1;
sql('SELECT adstream.drop_expired_partitions()');
is(sql(qq{SELECT count(*) FROM adstream.ad_stats_minute WHERE window_start >= $hour AND window_start < $hour + interval '1 hour'}),
	0, 'the minutes of that day are dropped');
is(hourly(), 50, 'the rollup still holds the hour');

# Retention raised again; a new source counts one event of that hour, another ad.
sql("ALTER SYSTEM SET adstream.minute_retention = 2592000; SELECT pg_reload_conf();");
sleep 1;
sql("SELECT adstream.create_source('b', '$broker->{bootstrap}', 'ev_b')");
AdstreamTest::replay($broker, 'ev_b', [ [ 0, event(1001, 999) ] ]);
AdstreamTest::wait_consumed($node, 'b', 1);
is(sql(q{SELECT sum(rejected) FROM adstream.offsets WHERE source = 'b'}), 1,
	'source b\'s event of the dropped day is rejected');
like(sql(q{SELECT reason || ': ' || detail FROM adstream.rejected_events WHERE source = 'b'}),
	qr/^too_late: retention dropped the minutes before /, '... as too_late, saying why');
is(sql(qq{SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'adstream.ad_stats_minute'::regclass
            AND adstream._partition_upper(i.inhrelid) > $hour AND adstream._partition_upper(i.inhrelid) <= $hour + interval '1 day'}),
	0, 'the dropped day\'s partition is not created again');
sql('SELECT adstream.refresh_rollups()');
is(hourly(), 50, 'the hour\'s rollup still holds source a\'s 50 impressions');

# A batch that read the mark before the drop would create the day: refused.
my ($ret, $out, $err) = $node->psql('postgres', qq{SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY[$hour])});
isnt($ret, 0, 'ensure_partitions refuses a day of minutes that retention dropped');
like($err, qr/were dropped by retention/, '... saying why');

$broker->stop;
done_testing();
