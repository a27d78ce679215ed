# Ingestion against a real server and the embedded broker: exact aggregates
# and dead letters for a stream with duplicates, malformed and late records,
# and the source lifecycle (pause, resume, drop) taking effect within ~1 s.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $broker = AdstreamTest::Broker->start(topics => ['ads:4']);
my $node = AdstreamTest::node('ingest', 'adstream.partition_discovery_interval' => '2s');

$node->safe_psql('postgres',
	"SELECT adstream.create_source('s1', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 2}')");

# 1. A stream with duplicates, bad records, late and future events.
my $r1 = AdstreamTest::loadgen($broker, topic => 'ads', count => 30000, seed => 1);
AdstreamTest::wait_consumed($node, 's1', $r1->{sent});
AdstreamTest::check_truth($node, [ $r1->{truth} ], 'first load');

my $status = $node->safe_psql('postgres',
	"SELECT count(DISTINCT worker_pid) || ' ' || count(*) || ' ' || sum(lag) FROM adstream.source_status WHERE source = 's1'");
is($status, '2 4 0', 'source_status: two workers, four partitions, no lag')
  or diag $node->safe_psql('postgres', 'SELECT * FROM adstream.source_status');

# Kafka group offsets mirror the database's (asynchronously, for lag monitors).
my $group = $node->safe_psql('postgres', "SELECT group_id FROM adstream.sources WHERE name = 's1'");
like($group, qr/^adstream\.postgres\.s1$/, 'default consumer group names database and source');

# 2. Pause: workers stop within about a second, nothing more is consumed.
sub seconds_until
{
	my ($sql) = @_;
	my $t0 = time();
	while (time() - $t0 < 30)
	{
		return time() - $t0 if $node->safe_psql('postgres', $sql) eq 't';
		usleep(20_000);
	}
	return 999;
}
$node->safe_psql('postgres', "SELECT adstream.pause_source('s1')");
my $t = seconds_until("SELECT NOT EXISTS (SELECT 1 FROM adstream.worker_status() WHERE pid IS NOT NULL)");
cmp_ok($t, '<', 3, sprintf('pause stops the workers (%.2f s)', $t));

my $r2 = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 2);
sleep 1;
is($node->safe_psql('postgres', "SELECT sum(next_offset) FROM adstream.offsets WHERE source = 's1'"),
	$r1->{sent}, 'a paused source consumes nothing');

# 3. Resume: consumption continues from the stored offsets.
$node->safe_psql('postgres', "SELECT adstream.resume_source('s1')");
$t = seconds_until("SELECT count(*) = 2 FROM adstream.worker_status() WHERE pid IS NOT NULL");
cmp_ok($t, '<', 3, sprintf('resume starts the workers (%.2f s)', $t));
AdstreamTest::wait_consumed($node, 's1', $r1->{sent} + $r2->{sent});
AdstreamTest::check_truth($node, [ $r1->{truth}, $r2->{truth} ], 'after pause and resume');

# 4. A topic that does not exist yet when its source is created.  (The mock
# broker creates it on the worker's first metadata request; it cannot add
# partitions to an existing topic, so growth itself is not exercised here.)
$node->safe_psql('postgres', "SELECT adstream.create_source('late_topic', '$broker->{bootstrap}', 'later')");
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM adstream.partition_status() p JOIN adstream.sources s ON s.id = p.source_id WHERE s.name = 'late_topic'")
  or die;
my $r3 = AdstreamTest::loadgen($broker, topic => 'later', count => 3000, seed => 3);
AdstreamTest::wait_consumed($node, 'late_topic', $r3->{sent});
my ($nparts) = `kcat -b $broker->{bootstrap} -L -t later` =~ /with (\d+) partitions/;
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.offsets WHERE source = 'late_topic'"),
	$nparts, "all $nparts partitions of a topic created after its source are consumed");

# 5. Drop: the workers go away and so do the offsets; results stay.
$node->safe_psql('postgres', "SELECT adstream.drop_source('late_topic')");
$t = seconds_until(
	"SELECT count(*) = 2 FROM adstream.worker_status() WHERE pid IS NOT NULL");
cmp_ok($t, '<', 3, sprintf('drop stops the source\'s worker (%.2f s)', $t));
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.offsets WHERE source = 'late_topic'"),
	0, 'drop removes the source\'s offsets');

# 6. start => latest: a partition without a stored offset begins at the end,
# and that starting point is stored before anything is consumed.
my $old = AdstreamTest::loadgen($broker, topic => 'tail', count => 2000, seed => 4, args => ['--partitions', 4]);
$node->safe_psql('postgres',
	"SELECT adstream.create_source('tail', '$broker->{bootstrap}', 'tail', options => '{\"start\": \"latest\"}')");
$node->poll_query_until('postgres', "SELECT sum(next_offset) = $old->{sent} FROM adstream.offsets WHERE source = 'tail'")
  or die 'start => latest did not store the end offsets';
my $new = AdstreamTest::loadgen($broker, topic => 'tail', count => 2000, seed => 5, args => ['--partitions', 4]);
AdstreamTest::wait_consumed($node, 'tail', $old->{sent} + $new->{sent});
my ($unique) = PostgreSQL::Test::Utils::slurp_file($new->{truth}) =~ /^total,unique,(\d+)$/m;
is($node->safe_psql('postgres', "SELECT sum(accepted) FROM adstream.offsets WHERE source = 'tail'"),
	$unique, 'start => latest counts only what was produced after the source started');

# 7. Every count names its source (issue #11, case 6): dropping one with
# forget_counts while its workers consume removes exactly what it counted.
my $tail_id = $node->safe_psql('postgres', "SELECT id FROM adstream.sources WHERE name = 'tail'");
is($node->safe_psql('postgres',
	"SELECT sum(impressions + clicks) FROM adstream.ad_stats_minute WHERE source_id = $tail_id"),
	$unique, 'the counts of a source are its rows of ad_stats_minute');
my $others = $node->safe_psql('postgres',
	"SELECT sum(impressions + clicks) FROM adstream.ad_stats_minute WHERE source_id <> $tail_id");
AdstreamTest::loadgen($broker, topic => 'tail', count => 5000, seed => 6, args => ['--partitions', 4]);
$node->safe_psql('postgres', "SELECT adstream.drop_source('tail', forget_counts => true)");
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.ad_stats_minute WHERE source_id = $tail_id"),
	0, 'drop_source(forget_counts) while its workers run leaves none of its counts');
$t = seconds_until("SELECT count(*) = 2 FROM adstream.worker_status() WHERE pid IS NOT NULL");
cmp_ok($t, '<', 3, sprintf('drop stops the source\'s workers (%.2f s)', $t));
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.ad_stats_minute WHERE source_id = $tail_id"),
	0, 'no batch of the dropped source commits after it');
is($node->safe_psql('postgres',
	"SELECT sum(impressions + clicks) FROM adstream.ad_stats_minute WHERE source_id <> $tail_id"),
	$others, 'the other sources\' counts are untouched');

# 8. Fast shutdown with workers busy is prompt.
my $t0 = time();
$node->stop('fast');
my $stop = time() - $t0;
cmp_ok($stop, '<', 5, sprintf('pg_ctl stop -m fast with running workers takes %.2f s', $stop));

unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/PANIC|TRAP|terminated by signal/, 'no crash in the server log');
$broker->stop;
done_testing();
