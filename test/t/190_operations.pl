# Exactly-once under what operators do (issue #11), each case a regression
# test that failed on 0.4:
#   1. a source created over history, one partition far behind the other:
#      0.4 judged lateness against the highest watermark of any partition
#      and dead-lettered half of the slow partition as too_late;
#   1b. a replay after expiry: what is forgotten is too_late, never recounted;
#   2. a batch that fails half-way through its claims (full dedup index)
#      left its claims in the index, to be taken for committed ones once
#      clog was truncated;
#   3. expiry computed its cutoff before taking its lock, so a batch that
#      committed while expiry waited had its hours dropped;
#   7. a paused source froze expiry for every source;
#   9. with synchronous_commit = off a batch was visible (and publishable)
#      before its commit was flushed, and an immediate stop lost it;
#  10. a partition whose worker had not started (no worker slot) had no
#      stored offset and no reported position: expiry could not see it, gave
#      up its source's hours behind the other partitions, and its history
#      was dead-lettered too_late once read (0.5, found by the soak).
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'hist:2', 'other:1', 'quiet:1', 'fast:1', 'twin:2' ]);
my $node = AdstreamTest::node('operations',
	'adstream.dedup_index_size' => 1000,
	'adstream.batch_max_messages' => 50,
	# expiry by hand, when each case calls it
	'adstream.auto_maintenance' => 'off');

my $t0 = (int(time() / 3600) - 4) * 3600 * 1000;	# ms, four hours ago on the hour
my $serial = 0;

sub event
{
	my ($n, $ms) = @_;
	return sprintf('{"event_id":"%s","type":"impression","ad_id":%d,"campaign_id":7,"user_id":1,"store_id":1,"ts":%d}',
		sprintf('00000000-0000-4000-8000-%012d', $n), 1 + $n % 5, $ms);
}

sub produce
{
	my ($topic, $partition, @lines) = @_;
	my $in = join("\n", @lines) . "\n";
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', $topic, '-p', $partition ], \$in)
	  or die "kcat failed";
}

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub counted
{
	my ($source) = @_;
	return sql("SELECT coalesce(sum(accepted), 0) || '/' || coalesce(sum(duplicates), 0) || '/' || coalesce(sum(rejected), 0)
			   FROM adstream.offsets WHERE source = '$source'");
}

# ---- 1. three hours of history; partition 1 is read to the end first -----
my @p0 = map { event(1000 + $_, $t0 + $_ * 60_000) } 0 .. 179;
my @p1 = map { event(2000 + $_, $t0 + $_ * 60_000) } 0 .. 179;
produce('hist', 1, @p1);
sql("SELECT adstream.create_source('hist', '$broker->{bootstrap}', 'hist')");
AdstreamTest::wait_consumed($node, 'hist', 180);
produce('hist', 0, @p0);
AdstreamTest::wait_consumed($node, 'hist', 360);
is(counted('hist'), '360/0/0', 'backfill: every event of the slow partition counts, none is too_late');
is(sql('SELECT sum(impressions) FROM adstream.ad_stats_minute'), 360, 'backfill: 360 impressions');

# ---- 1b. expiry, then a replay of everything -------------------------------
# Both partitions are read to the end, so neither holds expiry back: the
# source gives up the hours before its newest event (minute 179) less the
# horizon: minutes 0 to 59.
$node->poll_query_until('postgres',
	q{SELECT bool_and(read_position >= high_watermark) FROM adstream.partition_status() p
	   JOIN adstream.sources s ON s.id = p.source_id WHERE s.name = 'hist'})
  or die 'positions not reported';
sql('SELECT adstream.expire_dedup_state()');
my $expired = sql("SELECT extract(epoch FROM dedup_expired_before)::bigint * 1000 FROM adstream.sources WHERE name = 'hist'");
is($expired, $t0 + 3600_000, 'expiry gives up the hours before the newest event less the horizon, on the hour');
my $forgotten = grep { $_ * 60_000 + $t0 < $expired } 0 .. 179;
produce('hist', 0, @p0);
produce('hist', 1, @p1);
AdstreamTest::wait_consumed($node, 'hist', 720);
is(counted('hist'), '360/' . (360 - 2 * $forgotten) . '/' . (2 * $forgotten),
	'replay: remembered ids are duplicates, forgotten hours are too_late, nothing counts twice');
is(sql("SELECT count(*) FROM adstream.rejected_events WHERE source = 'hist' AND reason = 'too_late'"),
	2 * $forgotten, 'replay: every too_late event is a dead letter');
is($forgotten, 60, 'replay: an hour of each partition was forgotten');
is(sql('SELECT sum(impressions) FROM adstream.ad_stats_minute'), 360, 'replay: still 360 impressions');

# ---- 7. a paused source does not hold another's state ----------------------
sql("SELECT adstream.create_source('quiet', '$broker->{bootstrap}', 'quiet')");
produce('quiet', 0, event(3000, $t0));
AdstreamTest::wait_consumed($node, 'quiet', 1);
sql("SELECT adstream.pause_source('quiet')");
my $other_t = $t0 + 3 * 3600_000;
produce('hist', 0, map { event(4000 + $_, $other_t + $_ * 1000) } 0 .. 9);
AdstreamTest::wait_consumed($node, 'hist', 730);
sql('SELECT adstream.expire_dedup_state()');
is(sql("SELECT dedup_expired_before = to_timestamp(" . ($other_t / 1000) . ") - interval '1 hour'
	  FROM adstream.sources WHERE name = 'hist'"), 't',
	'a paused source with old state does not hold back another source\'s expiry');
is(sql("SELECT dedup_expired_before = to_timestamp(" . ($t0 / 1000) . ") - interval '1 hour'
	  FROM adstream.sources WHERE name = 'quiet'"), 't',
	'the paused source gives up only what is behind its own watermark less the horizon');
is(sql(q{SELECT count(*) FROM adstream.dedup_log d JOIN adstream.sources s ON s.id = d.source_id
		  WHERE s.name = 'quiet'}), 1, 'and keeps the ids of its last hour');

# ---- 2. a batch that fails half-way through its claims ---------------------
# 1000 ids fit; 'fast' sends 1500 more in batches of 50: ingestion stops at
# the full index, and every failed attempt must withdraw its claims.
sql("SELECT adstream.create_source('fast', '$broker->{bootstrap}', 'fast')");
produce('fast', 0, map { event(10_000 + $_, $other_t + $_ * 10) } 0 .. 1499);
$node->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM adstream.source_status WHERE source = 'fast' AND last_error LIKE '%dedup index is full%'})
  or die 'the full index was not reported';
ok($node->poll_query_until('postgres',
	q{SELECT entries = (SELECT sum(length(ids) / 16) FROM adstream.dedup_log) FROM adstream.dedup_index_status()}),
	'failed batches leave no claim behind: the index holds exactly the logged ids');

# ---- 3. expiry waits for a batch, then judges what it committed ------------
# A transaction that holds the expiry lock as a batch does commits the
# first batch of a new source, of an old hour, while expiry waits.
sql("DELETE FROM adstream.dedup_log WHERE source_id = (SELECT id FROM adstream.sources WHERE name = 'fast')");
sql("SELECT adstream.drop_source('fast')");
sql("SELECT adstream.create_source('late', '$broker->{bootstrap}', 'nosuchtopic')");
sql("SELECT adstream.pause_source('late')");
my ($in, $out, $err) = ('', '', '');
my $batch = IPC::Run::start([ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN;\nSELECT adstream._lock('adstream.dedup_expiry', 0, false);\n";
my $old_hour = $t0 / 1000;
$in .= "SELECT adstream.ensure_partitions('dedup_log', ARRAY[to_timestamp($old_hour)]);\n";
$in .= "INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts) VALUES ('late', 'nosuchtopic', 0, 1, to_timestamp($old_hour));\n";
$in .= "INSERT INTO adstream.dedup_log SELECT id, to_timestamp($old_hour), '\\x00000000000040008000000000099999' FROM adstream.sources WHERE name = 'late';\n";
$in .= "SELECT 'written';\n";
$batch->pump until $out =~ /written/;
my ($ein, $eout, $eerr) = ('', '', '');
my $expiry = IPC::Run::start([ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres'),
	'-c', 'SELECT adstream.expire_dedup_state()' ], '<', \$ein, '>', \$eout, '2>', \$eerr);
$node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%expire_dedup_state%' AND wait_event_type = 'Lock'})
  or die 'expiry did not wait for the batch';
$in .= "COMMIT;\n\\q\n";
$batch->finish;
ok($expiry->finish, 'expiry ran once the batch committed') or diag($eerr);
is(sql(q{SELECT count(*) FROM adstream.dedup_log d JOIN adstream.sources s ON s.id = d.source_id WHERE s.name = 'late'}), 1,
	'the ids the batch committed while expiry waited are kept (its source gave up nothing)');

# ---- 9. durable commits whatever synchronous_commit says ------------------
$node->append_conf('postgresql.conf', "synchronous_commit = off\nwal_writer_delay = 10000\n");
$node->restart;
sql("SELECT adstream.drop_source(name) FROM adstream.sources WHERE name <> 'hist'");
my $before = sql('SELECT sum(impressions) FROM adstream.ad_stats_minute');
produce('hist', 1, map { event(20_000 + $_, $other_t + $_ * 1000) } 0 .. 29);
$node->poll_query_until('postgres', "SELECT sum(impressions) = $before + 30 FROM adstream.ad_stats_minute")
  or die 'the batch did not become visible';
$node->stop('immediate');
# Look before any worker could read the batch again: no workers in template1.
$node->append_conf('postgresql.conf', "adstream.database = 'template1'\n");
$node->start;
is(sql('SELECT sum(impressions) FROM adstream.ad_stats_minute'), $before + 30,
	'with synchronous_commit = off, a visible batch survives an immediate stop');

$node->stop;

# ---- 10. a partition no worker has started on holds its source's expiry ----
# Three worker processes: the launcher, PostgreSQL's logical replication
# launcher and one consumer.  'twin' asks for two consumers; the one that
# owns partition 1 finds no slot.
my $slots = AdstreamTest::node('slots', max_worker_processes => 3);
produce('twin', 0, map { event(30_000 + $_, $t0 + $_ * 60_000) } 0 .. 179);
produce('twin', 1, map { event(31_000 + $_, $t0 + $_ * 60_000) } 0 .. 179);
$slots->safe_psql('postgres',
	qq{SELECT adstream.create_source('twin', '$broker->{bootstrap}', 'twin', options => '{"workers": 2}')});
AdstreamTest::wait_consumed($slots, 'twin', 180);
$slots->poll_query_until('postgres',
	q{SELECT count(*) = 1 AND bool_and(read_position >= high_watermark) FROM adstream.partition_status()})
  or die 'partition 0 was not reported read to its end';
is($slots->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'adstream consumer'}),
	1, 'one of the two consumers runs');
like(PostgreSQL::Test::Utils::slurp_file($slots->logfile), qr/Raise max_worker_processes/,
	'the other has no worker slot');
is($slots->safe_psql('postgres', q{SELECT partition_count FROM adstream.sources WHERE name = 'twin'}), 2,
	'the running consumer recorded the topic\'s two partitions');
$slots->safe_psql('postgres', 'SELECT adstream.expire_dedup_state()');
is($slots->safe_psql('postgres', q{SELECT dedup_expired_before FROM adstream.sources WHERE name = 'twin'}),
	'-infinity', 'a partition no worker has read holds its source\'s expiry');
$slots->append_conf('postgresql.conf', "max_worker_processes = 4\n");
$slots->restart;
AdstreamTest::wait_consumed($slots, 'twin', 360);
is($slots->safe_psql('postgres', q{SELECT sum(accepted) || '/' || sum(duplicates) || '/' || sum(rejected)
	  FROM adstream.offsets WHERE source = 'twin'}), '360/0/0',
	'once its worker starts, every event of that partition counts, none is too_late');
$slots->poll_query_until('postgres',
	q{SELECT count(*) = 2 AND bool_and(read_position >= high_watermark) FROM adstream.partition_status()})
  or die 'positions not reported';
$slots->safe_psql('postgres', 'SELECT adstream.expire_dedup_state()');
is($slots->safe_psql('postgres',
	q{SELECT extract(epoch FROM dedup_expired_before)::bigint * 1000 FROM adstream.sources WHERE name = 'twin'}),
	$t0 + 3600_000, 'with both partitions seen, expiry gives up what is behind the newest event less the horizon');
$slots->stop;
$broker->stop;
done_testing();
