# Changing a live source without recounting (issue #14, sections 1 and 3):
#   - create_source and create_sink return the new id;
#   - alter_source changes workers 1 -> 3 -> 2 and a librdkafka property, and
#     rename_source renames the source, all while a stream is produced; the
#     counts equal the ground truth, no message is read twice (the
#     duplicates counted equal the duplicates sent) and the offsets stay;
#   - a no-op alter restarts nothing; a bad configuration, too many workers
#     or another cluster is refused, the same cluster under another address
#     is not;
#   - the launcher starts no worker without a partition;
#   - pause, rename, drop and DROP EXTENSION log one LOG line per worker
#     naming its source and why, never a FATAL "terminating background
#     worker"; each worker shows an application_name in pg_stat_activity;
#   - alter_sink and rename_sink keep the sink's cursor: Pinot's view of the
#     topics still equals the database;
#   - before adstream.database exists the launcher waits quietly, says once
#     why, and starts in it once it is created.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'ads:4', 'small:1' ]);
my $other = AdstreamTest::Broker->start(topics => ['ads:4']);
my $node = AdstreamTest::node('alter',
	'adstream.max_workers' => 10,
	'adstream.batch_max_messages' => 500);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub sql_error
{
	my ($q) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $q);
	return $ret == 0 ? '' : $err;
}

# The running consumers of a source: "index/nworkers" each, sorted.
sub consumers
{
	my ($source) = @_;
	return sql(qq{SELECT string_agg((w.worker_index + 1) || '/' || s.workers, ' ' ORDER BY w.worker_index)
				    FROM adstream.worker_status() w JOIN adstream.sources s ON s.id = w.source_id
				   WHERE s.name = '$source' AND w.pid IS NOT NULL AND w.state = 'consuming'});
}

sub wait_consumers
{
	my ($source, $want) = @_;
	$node->poll_query_until('postgres', qq{
SELECT string_agg((w.worker_index + 1) || '/' || s.workers, ' ' ORDER BY w.worker_index) = '$want'
  FROM adstream.worker_status() w JOIN adstream.sources s ON s.id = w.source_id
 WHERE s.name = '$source' AND w.pid IS NOT NULL AND w.state = 'consuming'})
	  or die "consumers of $source are not $want: " . sql('SELECT * FROM adstream.worker_status()');
}

sub offsets_of
{
	my ($source) = @_;
	return sql("SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets WHERE source = '$source'");
}

my $bootstrap = $broker->{bootstrap};

# ---- create_source and create_sink return the new id -----------------------
my $id = sql("SELECT adstream.create_source('ads', '$bootstrap', 'ads')");
is($id, sql("SELECT id FROM adstream.sources WHERE name = 'ads'"), 'create_source returns the new source\'s id');
my $sink_id = sql("SELECT adstream.create_sink('pinot', '$bootstrap')");
is($sink_id, sql("SELECT id FROM adstream.sinks WHERE name = 'pinot'"), 'create_sink returns the new sink\'s id');
wait_consumers('ads', '1/1');

# ---- a stream, and the source changed under it ------------------------------
my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 30000, seed => 1401,
	args => [ '--rate', 5000 ], background => 1);
$node->poll_query_until('postgres', "SELECT coalesce(sum(next_offset), 0) > 3000 FROM adstream.offsets")
  or die 'the stream does not flow';

is(sql(qq{SELECT adstream.alter_source('ads', '{"workers": 3}')}), 't', 'alter_source: workers 1 -> 3');
wait_consumers('ads', '1/3 2/3 3/3');
$node->poll_query_until('postgres', "SELECT coalesce(sum(next_offset), 0) > 10000 FROM adstream.offsets")
  or die 'the stream stopped after workers 1 -> 3';

is(sql(qq{SELECT adstream.alter_source('ads', '{"workers": 2, "fetch.wait.max.ms": 50}')}), 't',
	'alter_source: workers 3 -> 2 and a librdkafka property at once');
wait_consumers('ads', '1/2 2/2');
is(sql(q{SELECT kafka_options->>'fetch.wait.max.ms' FROM adstream.sources WHERE name = 'ads'}), '50',
	'the property is stored');
$node->poll_query_until('postgres', "SELECT coalesce(sum(next_offset), 0) > 17000 FROM adstream.offsets")
  or die 'the stream stopped after workers 3 -> 2';

my $before_rename = offsets_of('ads');
sql(q{SELECT adstream.rename_source('ads', 'ads_eu')});
cmp_ok(offsets_of('ads_eu'), '>=', $before_rename, 'rename_source: the offsets follow the new name');
is(offsets_of('ads'), 0, 'rename_source: nothing is left under the old name');
is(sql(q{SELECT id FROM adstream.sources WHERE name = 'ads_eu'}), $id, 'rename_source: the id stays');
wait_consumers('ads_eu', '1/2 2/2');

AdstreamTest::finish_loadgen($run);
AdstreamTest::wait_consumed($node, 'ads_eu', $run->{sent});
AdstreamTest::check_truth($node, [ $run->{truth} ], 'after workers 1 -> 3 -> 2, a property and a rename');
my ($truth_dups) = map { /^total,duplicates,(\d+)/ ? $1 : () } split /\n/,
  PostgreSQL::Test::Utils::slurp_file($run->{truth});
is(sql(q{SELECT sum(duplicates) FROM adstream.offsets WHERE source = 'ads_eu'}), $truth_dups,
	'no message was read twice: the duplicates counted are the duplicates sent');
is(offsets_of('ads_eu'), $run->{sent}, 'the offsets end at the end of the topic');

# ---- a no-op alter restarts nothing ------------------------------------------
my $pids = join(',', sort(AdstreamTest::worker_pids($node, 'ads_eu')));
is(sql(qq{SELECT adstream.alter_source('ads_eu', '{"workers": 2, "fetch.wait.max.ms": "50"}')}), 'f',
	'alter_source with nothing different returns false');
sleep 1;
is(join(',', sort(AdstreamTest::worker_pids($node, 'ads_eu'))), $pids, 'and restarts no worker');

# ---- refused: checked as create_source checks ---------------------------------
like(sql_error(qq{SELECT adstream.alter_source('ads_eu', '{"workers": 5}')}),
	qr/topic "ads" has 4 partition\(s\), fewer than the 5 workers asked for.*HINT:  Use at most 4 workers/s,
	'more workers than partitions are refused');
like(sql_error(qq{SELECT adstream.alter_source('ads_eu', '{"workers": 11}')}),
	qr/more workers \(11\) than adstream.max_workers \(10\)/, 'more workers than adstream.max_workers are refused');
like(sql_error(qq{SELECT adstream.alter_source('ads_eu', '{"security.protocol": "SASL_SSL"}')}),
	qr/librdkafka refuses the configuration of this source.*DETAIL:  .*kerberos.*HINT:  .*"sasl.mechanisms"/si,
	'SASL without Kerberos is refused, with a hint naming sasl.mechanisms');
like(sql_error(qq{SELECT adstream.alter_source('ads_eu', '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.password": "pw-secret-1"}')}),
	qr/DETAIL:  sasl.username and sasl.password must be set.*HINT:  Check librdkafka properties "sasl.username", "sasl.password"/s,
	'PLAIN without a user name is refused, naming the property');
like(sql_error(qq{SELECT adstream.alter_source('ads_eu', '{"no.such.property": 1}')}),
	qr/invalid librdkafka property "no.such.property"/, 'an unknown property is refused');
like(sql_error(qq{SELECT adstream.alter_source('ads_eu', '{"topic": "other"}')}),
	qr/the topic of a source cannot be changed/, 'the topic cannot change');
like(sql_error(qq{SELECT adstream.alter_source('ads_eu', '{"brokers": "$other->{bootstrap}"}')}),
	qr/are not known to be the Kafka cluster source "ads_eu" consumes.*the cluster ids differ/si,
	'brokers of another cluster are refused');
my $same = $bootstrap =~ s/127\.0\.0\.1/localhost/gr;
is(sql(qq{SELECT adstream.alter_source('ads_eu', '{"brokers": "$same"}')}), 't',
	'the same cluster under another address is accepted (the brokers say so)');
is(sql(q{SELECT workers || ' ' || brokers FROM adstream.sources WHERE name = 'ads_eu'}), "2 $same",
	'a refused alter changed nothing; the accepted one changed only the brokers');
wait_consumers('ads_eu', '1/2 2/2');
# A failed statement's text, credentials included, reaches the server log
# (log_min_error_statement = error); the session can keep it out (README,
# "Security").  The error message itself never shows a secret value.
like(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/STATEMENT:  .*pw-secret-1/,
	'the text of a failed statement is logged, password included');
my (undef, undef, $err) = $node->psql('postgres',
	qq{SET log_statement = none; SET log_min_error_statement = panic; SELECT adstream.alter_source('ads_eu', '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.password": "pw-secret-2"}')});
like($err, qr/sasl.username and sasl.password must be set/, 'refused again');
unlike($err, qr/pw-secret-2/, 'the error does not show the password');
unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/pw-secret-2/,
	'with log_min_error_statement = panic (and log_statement = none) the failed statement is not logged');
# The same, once for the role that manages sources (an adstream_admin).
sql(q{CREATE ROLE ops LOGIN IN ROLE adstream_admin;
	  ALTER ROLE ops SET log_min_error_statement = panic; ALTER ROLE ops SET log_statement = none;});
(undef, undef, $err) = $node->psql('postgres',
	qq{SELECT adstream.alter_source('ads_eu', '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.password": "pw-secret-3"}')},
	extra_params => [ '-U', 'ops' ]);
like($err, qr/sasl.username and sasl.password must be set/, 'an adstream_admin is refused the same way');
unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/pw-secret-3/,
	'ALTER ROLE ... SET log_min_error_statement = panic keeps that role\'s failed statements out of the log');

# ---- a second stream after the brokers changed: still exact ------------------
my $run2 = AdstreamTest::loadgen($broker, topic => 'ads', count => 6000, seed => 1402);
AdstreamTest::wait_consumed($node, 'ads_eu', $run->{sent} + $run2->{sent});
AdstreamTest::check_truth($node, [ $run->{truth}, $run2->{truth} ], 'after the brokers changed');

# ---- no worker without a partition ------------------------------------------
# A source whose workers outnumber its topic's partitions, as one created
# while the brokers could not say how many there are: the workers without a
# partition stop by themselves, for good, and the launcher does not start
# them again.
# (The launcher does not know the size of a new source's topic: it starts
# all three, and two stop by themselves.  Later it knows, and starts none.)
sql(qq{BEGIN; SELECT adstream.create_source('later', '$bootstrap', 'small');
	   UPDATE adstream.sources SET workers = 3 WHERE name = 'later'; COMMIT;});
wait_consumers('later', '1/3');
sleep 3;
is(consumers('later'), '1/3', 'only the worker with a partition runs');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
like($log, qr/adstream consumer 3\/3 of source "later" stopped: topic "small" has 1 partition\(s\), none for this worker/,
	'a worker without a partition says so as it stops');
unlike($log, qr/consumer \d\/3 of source "later" exited unexpectedly/, 'and is not restarted as a failure');
sql(q{BEGIN; UPDATE adstream.sources SET generation = adstream._new_generation() WHERE name = 'later';
	  SELECT adstream._wake_launcher(); COMMIT;});
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'adstream consumer later 1/3'
	AND backend_start > now() - interval '5 s'}) or die 'later was not restarted';
sleep 2;
is(consumers('later'), '1/3', 'once the topic\'s size is known, the launcher starts no worker without a partition');
is(() = PostgreSQL::Test::Utils::slurp_file($node->logfile) =~ /consumer 3\/3 of source "later" (started|stopped)/g, 2,
	'(worker 3/3 started once, and stopped once)');

# ---- sinks: alter and rename keep the cursor ---------------------------------
# Only building the producer shows this one: the publisher's transactions
# time out after 10 s, and a message may not outlive its transaction.
like(sql_error(qq{SELECT adstream.alter_sink('pinot', '{"message.timeout.ms": 60000}')}),
	qr/DETAIL:  `message.timeout.ms` must be set <= `transaction.timeout.ms`.*HINT:  Check librdkafka properties "message.timeout.ms", "transaction.timeout.ms"/s,
	'alter_sink refuses what only the producer\'s construction refuses');
my $log_at = -s $node->logfile;
is(sql(qq{SELECT adstream.alter_sink('pinot', '{"message.timeout.ms": 9000}')}), 't', 'alter_sink: a property');
# The sink restarts for the alter before it is renamed, so that the rename
# stops a running sink (the LOG line checked below).
$node->wait_for_log(qr/adstream sink "pinot" stopped: the sink was changed.*adstream sink "pinot" started/s, $log_at);
sql(q{SELECT adstream.rename_sink('pinot', 'pinot_eu')});
like(sql_error(q{SELECT adstream.alter_sink('pinot_eu', '{"topic_ad_stats": "x"}')}),
	qr/topics and the name of a sink cannot be changed/, 'a sink\'s topics cannot change');
like(sql_error(qq{SELECT adstream.alter_sink('pinot_eu', '{"security.protocol": "SASL_SSL"}')}),
	qr/librdkafka refuses the configuration of this sink/, 'alter_sink builds the client too');
AdstreamTest::wait_published($node);
# Pinot's upsert view of the sink's topic (the latest version of each key)
# equals the database: nothing was lost or left behind across the restarts.
my $dir = PostgreSQL::Test::Utils::tempdir();
IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $bootstrap, '--topic', 'adstream.ad_stats' ],
	'>', "$dir/stats.jsonl", '2>', "$dir/stats.err") or die 'upsert reader failed';
is(sql(qq{
CREATE TEMP TABLE stats_raw (j jsonb);
COPY stats_raw FROM '$dir/stats.jsonl' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
CREATE TEMP VIEW pinot AS
  SELECT (j->>'ad_id')::bigint AS ad_id, to_timestamp((j->>'window_start')::bigint / 1000.0) AS window_start,
         (j->>'impressions')::bigint AS impressions, (j->>'clicks')::bigint AS clicks FROM stats_raw;
CREATE TEMP VIEW db AS
  SELECT ad_id, window_start, sum(impressions)::bigint AS impressions, sum(clicks)::bigint AS clicks
    FROM adstream.ad_stats_minute GROUP BY ad_id, window_start;
SELECT (SELECT count(*) FROM db) > 0
   AND (SELECT count(*) FROM ((TABLE pinot EXCEPT TABLE db) UNION ALL (TABLE db EXCEPT TABLE pinot)) d) = 0;
}), 't', 'after alter_sink and rename_sink, Pinot\'s upsert view of adstream.ad_stats equals the database');

# ---- application_name ---------------------------------------------------------
is(sql(q{SELECT string_agg(application_name, ', ' ORDER BY application_name) FROM pg_stat_activity
		  WHERE application_name LIKE 'adstream%'}),
	'adstream consumer ads_eu 1/2, adstream consumer ads_eu 2/2, adstream consumer later 1/3, adstream launcher, adstream sink pinot_eu',
	'every worker shows its application_name');

# ---- stopping is a LOG line naming the source, never a FATAL -----------------
sql(q{SELECT adstream.pause_source('ads_eu')});
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM adstream.worker_status() w
	JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'ads_eu' AND w.pid IS NOT NULL}) or die;
sql(q{SELECT adstream.drop_source('later')});
sql(q{SELECT adstream.drop_sink('pinot_eu')});
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity
	WHERE application_name LIKE 'adstream consumer later%' OR application_name LIKE 'adstream sink%'}) or die;
sql(q{SELECT adstream.resume_source('ads_eu')});
wait_consumers('ads_eu', '1/2 2/2');
sql('DROP EXTENSION adstream');
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'adstream consumer%'})
  or die 'the workers did not stop after DROP EXTENSION';

$log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
like($log, qr/LOG:  adstream consumer 1\/1 of source "ads" stopped: the source's workers changed from 1 to 3/,
	'LOG: workers changed');

# One owner per partition across each change: every worker of the old
# generation had exited (its LOG line comes just before its exit) before
# any worker of the new one started.
my @lines = split /\n/, $log;
for my $change ([ 1, 'ads', 3, 'ads' ], [ 3, 'ads', 2, 'ads' ], [ 2, 'ads', 2, 'ads_eu' ])
{
	my ($n_old, $old, $n_new, $new) = @$change;
	my @stops = grep { $lines[$_] =~ /consumer \d\/$n_old of source "$old" stopped/ } 0 .. $#lines;
	my ($first_new) = grep { $_ > $stops[0] && $lines[$_] =~ /consumer \d\/$n_new of source "$new" started/ }
	  0 .. $#lines;
	ok(@stops == $n_old && defined $first_new && $stops[-1] < $first_new,
		"$n_old worker(s) of \"$old\" -> $n_new of \"$new\": every old worker stopped before the first new one started");
}
like($log, qr/LOG:  adstream consumer 1\/2 of source "ads" stopped: the source was renamed to "ads_eu"/, 'LOG: renamed');
like($log, qr/LOG:  adstream consumer 2\/2 of source "ads_eu" stopped: the source was paused/, 'LOG: paused');
like($log, qr/LOG:  adstream consumer 1\/3 of source "later" stopped: the source was dropped/, 'LOG: dropped');
unlike($log, qr/FATAL:  (cannot read|database)/, 'the launcher started without a FATAL');
like($log, qr/LOG:  adstream sink "pinot" stopped: the sink was renamed to "pinot_eu"/, 'LOG: the sink renamed');
like($log, qr/LOG:  adstream sink "pinot_eu" stopped: the sink was dropped/, 'LOG: the sink dropped');
like($log, qr/LOG:  adstream consumer 1\/2 of source "ads_eu" stopped: the extension was dropped/, 'LOG: DROP EXTENSION');
unlike($log, qr/terminating background worker "adstream/, 'no adstream worker was terminated with a FATAL');
unlike($log, qr/consumer worker -1|publisher of sink/, 'publishers are called sinks');

$node->stop;

# ---- adstream.database does not exist yet ------------------------------------
# The launcher waits without a FATAL, says once why, and starts in the
# database within seconds of its creation, without a restart.
my $late = AdstreamTest::node('nodb', 'adstream.database' => "'ads'", create_extension => 0);
$late->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
	WHERE application_name = 'adstream launcher' AND datname IS NULL}) or die 'no waiting launcher';
sleep 6;	# more than one of its rounds
$log = PostgreSQL::Test::Utils::slurp_file($late->logfile);
is(() = $log =~ /WARNING:  adstream.database names database "ads", which does not exist; adstream waits for it/g, 1,
	'the launcher says once that adstream.database does not exist');
like($log, qr/HINT:  Create it \(CREATE DATABASE ads\) and run CREATE EXTENSION adstream in it; no restart is needed/,
	'with a hint');
unlike($log, qr/FATAL/, 'and waits without a FATAL');
$late->safe_psql('postgres', 'CREATE DATABASE ads');
$late->safe_psql('ads', 'CREATE EXTENSION adstream');
$late->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
	WHERE application_name = 'adstream launcher' AND datname = 'ads'}) or die 'the launcher did not start in ads';
$late->safe_psql('ads', "SELECT adstream.create_source('late', '$bootstrap', 'ads')");
$late->poll_query_until('ads', q{SELECT sum(next_offset) = } . ($run->{sent} + $run2->{sent}) . q{ FROM adstream.offsets})
  or die 'the late source did not consume the topic';
pass('once the database exists, the launcher starts in it and its source consumes the topic');
$log = PostgreSQL::Test::Utils::slurp_file($late->logfile);
like($log, qr/LOG:  adstream: database "ads" exists now; the launcher starts in it/, 'and says so');
unlike($log, qr/FATAL/, 'no FATAL at all');
$late->stop;

$broker->stop;
$other->stop;
done_testing();
