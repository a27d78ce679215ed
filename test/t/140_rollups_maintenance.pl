# Rollups and maintenance: hour, 6h and day rollups equal a recomputation
# from the minutes, also after late events change minutes already rolled up;
# ad_stats() is exact before a refresh; expired partitions of dedup_log,
# ad_events and ad_stats_minute are dropped and never seen again; pg_cron
# runs the jobs that schedule_maintenance() installs.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'ads:1', 'old:1' ]);
my $node = AdstreamTest::node('rollups',
	shared_preload_libraries => "'adstream,pg_cron'",
	'cron.database_name' => "'postgres'",
	'cron.use_background_workers' => 'on',
	'adstream.dedup_horizon' => "'10min'",
	'adstream.attribution_window' => "'10min'",
	# maintenance by hand, each step checked (185_maintenance: automatic)
	'adstream.auto_maintenance' => 'off');
$node->safe_psql('postgres', "SELECT adstream.create_source('ads', '$broker->{bootstrap}', 'ads')");

# Two hours of event time, starting on an hour boundary, three hours ago.
my $start = (int(time() / 3600) - 3) * 3600 * 1000;
my @common = ('--partitions', 1, '--horizon-s', 600);
my $a = AdstreamTest::loadgen($broker, topic => 'ads', count => 12000, seed => 21, start_ms => $start,
	args => [ @common, '--span-s', 7200 ]);
AdstreamTest::wait_consumed($node, 'ads', $a->{sent});
AdstreamTest::check_truth($node, [ $a->{truth} ], 'two hours of events');

# Rows of a rollup (or of ad_stats()) that differ from the minutes summed up.
sub rollup_diff
{
	my ($g, $rel) = @_;
	$rel //= "adstream.ad_stats_$g";
	return $node->safe_psql('postgres', qq{
WITH want AS (SELECT ad_id, adstream.bucket('$g', window_start) AS window_start,
                     sum(impressions)::bigint AS impressions, sum(clicks)::bigint AS clicks
                FROM adstream.ad_stats_minute GROUP BY 1, 2),
     got AS (SELECT ad_id, window_start, impressions, clicks FROM $rel)
SELECT count(*) FROM ((TABLE want EXCEPT TABLE got) UNION ALL (TABLE got EXCEPT TABLE want)) d});
}

for my $g ('hour', '6h', 'day')
{
	is(rollup_diff($g, "adstream.ad_stats('-infinity', 'infinity', '$g')"), 0,
		"ad_stats(..., '$g') is exact before any refresh");
}
cmp_ok($node->safe_psql('postgres', 'SELECT adstream.refresh_rollups()'), '>', 100,
	'the first refresh consumes the pending minutes');
is($node->safe_psql('postgres', 'SELECT count(*) FROM adstream.rollup_pending'), 0, 'nothing left pending');
is(rollup_diff($_), 0, "ad_stats_$_ equals the minutes summed up") for ('hour', '6h', 'day');

# Late events (within the horizon) change minutes that were rolled up.
my $b = AdstreamTest::loadgen($broker, topic => 'ads', count => 3000, seed => 22,
	start_ms => $start + 112 * 60_000, args => [ @common, '--span-s', 300 ]);
AdstreamTest::wait_consumed($node, 'ads', $a->{sent} + $b->{sent});
AdstreamTest::check_truth($node, [ $a->{truth}, $b->{truth} ], 'with late events');
cmp_ok(rollup_diff('hour'), '>', 0, 'the late events made the hour rollup stale');
is(rollup_diff('hour', "adstream.ad_stats('-infinity', 'infinity', 'hour')"), 0,
	'ad_stats() stays exact while the rollup is stale');
$node->safe_psql('postgres', 'SELECT adstream.refresh_rollups()');
is(rollup_diff($_), 0, "after the refresh ad_stats_$_ equals the minutes again") for ('hour', '6h', 'day');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM adstream.campaign_stats('-infinity', 'infinity', 'day') c
  FULL JOIN (SELECT campaign_id, adstream.bucket('day', window_start) AS d, sum(impressions) AS i, sum(clicks) AS k
               FROM adstream.ad_stats_minute GROUP BY 1, 2) m ON m.campaign_id = c.campaign_id AND m.d = c.window_start
 WHERE c.impressions IS DISTINCT FROM m.i OR c.clicks IS DISTINCT FROM m.k}), 0,
	'campaign totals equal the minutes summed per campaign');

# Expiry behind the watermark: dedup state (horizon 10 min) and ad events
# (attribution window + horizon = 20 min).  The first hour is behind both.
my $parts = q{SELECT count(*) FROM pg_inherits WHERE inhparent = 'adstream.%s'::regclass};
my ($dedup0, $events0) = map { $node->safe_psql('postgres', sprintf($parts, $_)) } qw(dedup_log ad_events);
my $index_sql = 'SELECT entries FROM adstream.dedup_index_status()';
my $index0 = $node->safe_psql('postgres', $index_sql);
cmp_ok($node->safe_psql('postgres', 'SELECT adstream.drop_expired_partitions()'), '>=', 2,
	'drop_expired_partitions drops the first hour of dedup state and ad events');
cmp_ok($node->safe_psql('postgres', $index_sql), '<', $index0, 'the dedup index forgets the expired hour');
# After a restart the index is rebuilt from what is left of dedup_log: the same ids.
my $index1 = $node->safe_psql('postgres', $index_sql);
$node->restart;
$node->poll_query_until('postgres', 'SELECT ready FROM adstream.dedup_index_status()') or die;
is($node->safe_psql('postgres', $index_sql), $index1, 'after a restart the index holds the same number of ids');
is($node->safe_psql('postgres', 'SELECT sum(length(ids) / 16) FROM adstream.dedup_log'), $index1,
	'... which are those in dedup_log');
cmp_ok($node->safe_psql('postgres', sprintf($parts, 'dedup_log')), '<', $dedup0, 'a dedup_log partition is gone');
cmp_ok($node->safe_psql('postgres', sprintf($parts, 'ad_events')), '<', $events0, 'an ad_events partition is gone');
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM adstream.dedup_log
         WHERE hour < date_bin('1 hour', adstream.source_watermark('ads') - interval '10 min', 'epoch'))
     + (SELECT count(*) FROM adstream.ad_events
         WHERE ts < date_bin('1 hour', adstream.ad_events_watermark() - interval '20 min', 'epoch'))}),
	0, 'no query sees an expired row');

# Minute retention.  Events older than adstream.minute_retention (7 days)
# are dead letters: their minutes would be dropped, and a rollup refreshed
# from a partly dropped hour would shrink.
$node->safe_psql('postgres', "SELECT adstream.create_source('old', '$broker->{bootstrap}', 'old')");
my $c = AdstreamTest::loadgen($broker, topic => 'old', count => 500, seed => 23,
	start_ms => $start - 10 * 86400 * 1000, args => [ @common, '--span-s', 600, '--dup-ratio', 0 ]);
AdstreamTest::wait_consumed($node, 'old', $c->{sent});
is($node->safe_psql('postgres', "SELECT sum(accepted) || ' ' || sum(rejected) FROM adstream.offsets WHERE source = 'old'"),
	"0 $c->{sent}", 'events older than the minute retention are all dead-lettered');
like($node->safe_psql('postgres', "SELECT detail FROM adstream.rejected_events WHERE source = 'old' AND reason = 'too_late' LIMIT 1"),
	qr/minute_retention/, '... as too_late, saying why');

# Minutes written ten days ago (by hand here) are rolled up, then dropped;
# their day rollup stays.
my $old_day = "adstream.bucket('day', now() - interval '10 days')";
$node->safe_psql('postgres', qq{
SELECT adstream.ensure_partitions('ad_stats_minute', ARRAY[$old_day]);
INSERT INTO adstream.ad_stats_minute (ad_id, campaign_id, window_start, impressions, clicks)
SELECT a, 1, $old_day + m * interval '1 minute', 10, 1 FROM generate_series(1, 5) a, generate_series(0, 59) m;
INSERT INTO adstream.rollup_pending SELECT $old_day + m * interval '1 minute' FROM generate_series(0, 59) m;});
$node->safe_psql('postgres', 'SELECT adstream.drop_expired_partitions()');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM adstream.ad_stats_minute WHERE window_start < now() - interval '7 days'"),
	0, 'minutes older than adstream.minute_retention are dropped');
is($node->safe_psql('postgres',
	"SELECT sum(impressions) || ' ' || sum(clicks) FROM adstream.ad_stats(now() - interval '30 days', now(), 'day') WHERE window_start = $old_day"),
	'3000 300', 'their day rollup was refreshed first and is kept');

# pg_cron: the jobs are installed, run, and removed.
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
is($node->safe_psql('postgres', 'SELECT count(*) FROM adstream.schedule_maintenance()'), 3,
	'schedule_maintenance installs three jobs');
is($node->safe_psql('postgres', q{SELECT string_agg(jobname || ' ' || schedule || ' ' || command, E'\n' ORDER BY jobname)
  FROM cron.job WHERE database = 'postgres'}), join("\n",
	'adstream_partitions */10 * * * * SELECT adstream.create_partitions_ahead()',
	'adstream_retention */5 * * * * SELECT adstream.drop_expired_partitions()',
	'adstream_rollups * * * * * SELECT adstream.refresh_rollups()'), 'the jobs and their schedules');
$node->poll_query_until('postgres', q{
SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
 WHERE j.jobname = 'adstream_rollups' AND d.status = 'succeeded'}) or die 'the rollup job never ran';
pass('pg_cron ran the rollup job');
is($node->safe_psql('postgres', 'SELECT adstream.unschedule_maintenance()'), 3, 'unschedule_maintenance removes them');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cron.job'), 0, 'no jobs are left');

$node->stop;
$broker->stop;
done_testing();
