# source_status and sink_status tell the truth (issue #14, section 2), and
# adstream.status_history keeps it:
#   1. a healthy source: consuming, connected, lag 0 and not stale;
#   2. the broker goes down: the workers say "disconnected", not connected,
#      with the error and its time, the lag flagged stale; when it comes
#      back, the error clears, and the history has both changes;
#   3. a bad broker list never looks like success;
#   4. a sink with SASL_SSL and GSSAPI options and no Kerberos shows its
#      error in sink_status, and the log calls it a sink, never a consumer;
#   5. a library newer than the SQL objects (0.5 objects, this library)
#      shows in source_status until ALTER EXTENSION adstream UPDATE;
#   6. too few max_worker_processes: the worker without a slot says so,
#      its partitions are listed with their lag flagged unknown; too small
#      adstream.max_workers likewise; all of it clears once the server has
#      slots.
# Counts stay exact throughout (check_truth).
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;
use Time::HiRes qw(time);

my $broker = AdstreamTest::Broker->start(topics => [ 'ads:4', 'other:2', 'v:2', 'w:4' ]);
my $node = AdstreamTest::node('status', 'adstream.batch_max_messages' => 500);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub status { return $node->safe_psql('postgres', 'SELECT * FROM adstream.source_status ORDER BY 1, 4'); }

# ---- 1. healthy -----------------------------------------------------------
sql("SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 2}')");
my $first = AdstreamTest::loadgen($broker, topic => 'ads', count => 6000, seed => 51);
AdstreamTest::wait_consumed($node, 's', $first->{sent});
$node->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'consuming' AND connected AND NOT lag_stale
	AND lag = 0 AND lag_seconds = 0 AND event_lag_seconds = 0 AND last_error IS NULL) FROM adstream.source_status WHERE source = 's'})
  or diag status();
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT worker_pid) || ' ' || bool_and(connected) || ' ' || bool_and(NOT lag_stale)
	FROM adstream.source_status WHERE source = 's'}), '4 2 true true',
	'healthy: four partitions, two workers, connected, lag current');
ok($node->poll_query_until('postgres', q{SELECT count(DISTINCT worker) = 2 FROM adstream.status_history
	WHERE name = 's' AND state = 'consuming' AND connected}),
	'healthy: the history has each worker consuming, connected')
  or diag sql('SELECT * FROM adstream.status_history ORDER BY id');

# ---- 1b. lag in seconds while batches cannot commit ------------------------
# A session holds adstream.offsets for 6 s: the workers read the new messages
# but cannot commit them.  Meanwhile lag_seconds counts how long they have
# waited (they arrived after the partitions were last seen caught up), the
# report is current, and afterwards everything is 0 again.
my ($lock_in, $lock_out) = ('', '');
my $locker = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
	'BEGIN; LOCK TABLE adstream.offsets IN EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT;' ],
	'<', \$lock_in, '>', \$lock_out, '2>', \$lock_out);
$node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_locks WHERE relation = 'adstream.offsets'::regclass AND mode = 'ExclusiveLock' AND granted});
my $t_produce = time();
my $held = AdstreamTest::loadgen($broker, topic => 'ads', count => 2000, seed => 55);
sleep 2;
my ($lagged, $secs, $ev, $stale) = split /\|/, sql(q{SELECT sum(lag), max(lag_seconds), min(event_lag_seconds), bool_or(lag_stale)
	FROM adstream.source_status WHERE source = 's'});
my $waited = time() - $t_produce;
cmp_ok($lagged, '>', 0, "blocked batches: lag $lagged messages");
# (an upper bound, which the workers' report interval, 0.5 s, and a busy machine loosen)
ok($secs > 1 && $secs <= $waited + 1.5, sprintf('blocked batches: lag_seconds %.1f, at most about the %.1f s since they were produced', $secs, $waited));
cmp_ok($ev, '>', 0, 'blocked batches: event_lag_seconds > 0');
is($stale, 'f', 'blocked batches: the lag figures are current');
$locker->finish;
AdstreamTest::wait_consumed($node, 's', $first->{sent} + $held->{sent});
ok($node->poll_query_until('postgres', q{SELECT bool_and(lag = 0 AND lag_seconds = 0 AND event_lag_seconds = 0 AND NOT lag_stale)
	FROM adstream.source_status WHERE source = 's'}), 'committed: every lag is 0 again')
  or diag status();
$first->{sent} += $held->{sent};

# ---- 2. the broker goes down and comes back --------------------------------
my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 52,
	args => [ '--rate', 5000 ], background => 1);
$node->poll_query_until('postgres', q{SELECT sum(lag) > 0 OR sum(next_offset) > 7000 FROM adstream.source_status WHERE source = 's'});
$broker->cmd('down all');
ok($node->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'disconnected' AND NOT connected
	AND last_error IS NOT NULL AND last_error_at IS NOT NULL AND lag_stale) FROM adstream.source_status WHERE source = 's'}),
	'broker down: every partition says disconnected, with the error and its time, lag flagged stale')
  or diag status();
ok($node->poll_query_until('postgres', q{SELECT count(DISTINCT worker) = 2 FROM adstream.status_history
	WHERE name = 's' AND state = 'disconnected' AND NOT connected AND error IS NOT NULL}),
	'broker down: the history has both workers disconnected, with the error');
# It stays so while the broker is down (messages fetched before are no proof of a connection).
sleep 3;
is(sql(q{SELECT count(*) FROM adstream.source_status WHERE source = 's'
	AND (worker_state <> 'disconnected' OR connected OR last_error IS NULL OR NOT lag_stale)}), 0,
	'broker down: still disconnected with the error three seconds later')
  or diag status();
note 'while down: ' . sql(q{SELECT string_agg(DISTINCT last_error, ' | ') FROM adstream.source_status WHERE source = 's'});
$broker->cmd('up all');
ok($node->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'consuming' AND connected AND last_error IS NULL)
	FROM adstream.source_status WHERE source = 's'}),
	'broker back: consuming, connected, the error cleared')
  or diag status();
# Each worker's latest row (one may have noticed the outage after the other recovered).
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM (
	SELECT DISTINCT ON (h.worker) h.state, h.connected, h.error FROM adstream.status_history h
	 WHERE h.name = 's' ORDER BY h.worker, h.id DESC) last
	WHERE last.state = 'consuming' AND last.connected AND last.error IS NULL}),
	'broker back: the history records the recovery, the error cleared');
AdstreamTest::finish_loadgen($run);
AdstreamTest::wait_consumed($node, 's', $first->{sent} + $run->{sent});
$node->poll_query_until('postgres', q{SELECT bool_and(lag = 0 AND NOT lag_stale AND lag_seconds = 0) FROM adstream.source_status WHERE source = 's'})
  or diag status();
is(sql(q{SELECT bool_and(lag = 0 AND NOT lag_stale) FROM adstream.source_status WHERE source = 's'}), 't',
	'after the outage: lag 0 and current');
AdstreamTest::check_truth($node, [ $first->{truth}, $held->{truth}, $run->{truth} ], 'after the broker outage');

# ---- 3. a bad broker list ----------------------------------------------------
sql(q{SELECT adstream.create_source('bad', '127.0.0.1:1', 'other')});
ok($node->poll_query_until('postgres', q{SELECT bool_and(worker_state IN ('connecting', 'disconnected')
	AND NOT coalesce(connected, false) AND last_error IS NOT NULL AND lag_stale) FROM adstream.source_status WHERE source = 'bad'}),
	'bad broker list: not consuming, not connected, with an error')
  or diag status();
sleep 3;
is(sql(q{SELECT count(*) FROM adstream.status_history WHERE name = 'bad' AND (state = 'consuming' OR connected)}), 0,
	'bad broker list: never consuming nor connected in the history');
like(sql(q{SELECT last_error FROM adstream.source_status WHERE source = 'bad'}), qr/127\.0\.0\.1:1|brokers? .*down|Connection refused/i,
	'bad broker list: the error names the broker or the refusal');
sql(q{SELECT adstream.drop_source('bad')});

# ---- 4. a sink with SASL_SSL and GSSAPI, no Kerberos -------------------------
# The README's example options, without Kerberos.  Written into the row
# directly (a new generation restarts the publisher with them), as options
# that create_sink accepted once would be: whatever create_sink checks, a
# sink that cannot work must say so.
my $log_pos = -s $node->logfile;
sql(qq{SELECT adstream.create_sink('krb', '$broker->{bootstrap}')});
sql(q{UPDATE adstream.sinks SET kafka_options = '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "GSSAPI"}',
	generation = adstream._new_generation() WHERE name = 'krb'});
ok($node->poll_query_until('postgres', q{SELECT last_error IS NOT NULL AND last_error_at IS NOT NULL
	AND worker_state NOT IN ('starting', 'publishing') FROM adstream.sink_status WHERE sink = 'krb'}),
	'SASL_SSL sink: sink_status shows its error, and not as starting or publishing')
  or diag sql('SELECT * FROM adstream.sink_status');
my $sink_error = sql(q{SELECT worker_state || ': ' || last_error || ' (restarts ' || restarts || ')' FROM adstream.sink_status WHERE sink = 'krb'});
note "sink: $sink_error";
ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM adstream.status_history
	WHERE kind = 'sink' AND name = 'krb' AND error IS NOT NULL}),
	'SASL_SSL sink: the history has its error');
sleep 5;
is(sql(q{SELECT count(*) FROM adstream.sink_status WHERE sink = 'krb' AND (last_error IS NULL OR worker_state = 'publishing')}), 0,
	'SASL_SSL sink: the error stays shown while it fails (also across restarts)');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_pos);
my @krb_lines = grep { /krb/ } split /\n/, $log;
ok(@krb_lines > 0, 'SASL_SSL sink: the log names it');
is(join("\n", grep { /consumer|source|worker -1/ } @krb_lines), '', 'SASL_SSL sink: the log calls it a sink, never a consumer');
sql(q{SELECT adstream.drop_sink('krb')});
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM adstream.publisher_status()});
is(sql(q{SELECT state FROM adstream.status_history WHERE name = 'krb' ORDER BY id DESC LIMIT 1}), 'stopped',
	'dropped sink: the history ends with stopped');

# the metrics count what happened
cmp_ok(sql(q{SELECT value FROM adstream.metrics WHERE kind = 'source' AND name = 's' AND metric = 'errors_total'}), '>', 0,
	'metrics: the outage counted as errors of source s');
is(sql(q{SELECT value FROM adstream.metrics WHERE kind = 'source' AND name = 's' AND metric = 'messages_accepted_total'}),
	sql(q{SELECT sum(accepted) FROM adstream.offsets WHERE source = 's'}), 'metrics: accepted messages');

# The shipped postgres_exporter queries run, as a reader, and give every
# column their metrics name: one row per source and sink.
sql(q{CREATE ROLE exporter LOGIN IN ROLE adstream_reader});
sql(qq{SELECT adstream.create_sink('exp', '$broker->{bootstrap}')});
my $yml = PostgreSQL::Test::Utils::slurp_file("$ENV{TESTDIR}/docs/postgres_exporter.yml");
my %queries = $yml =~ /^(adstream_\w+):\n  query: \|\n(.*?)\n  metrics:\n/msg;
is(join(',', sort keys %queries), 'adstream_sink,adstream_source', 'postgres_exporter.yml: a query for sources and sinks');
for my $q (sort keys %queries)
{
	my ($block) = $yml =~ /^\Q$q\E:\n.*?\n  metrics:\n(.*?)(?:\n\n|\z)/ms;
	my @columns = $block =~ /^    - (\w+):$/mg;
	my $out = $node->safe_psql('postgres', $queries{$q}, extra_params => [ '-U', 'exporter', '-P', 'tuples_only=off', '-P', 'footer=off' ]);
	my ($header, @rows) = split /\n/, $out;
	is($header, join('|', @columns), "postgres_exporter.yml: $q gives the columns its metrics name");
	is(scalar(@rows), 1, "postgres_exporter.yml: $q gives one row per " . ($q =~ /sink/ ? 'sink' : 'source'));
}
sql(q{SELECT adstream.drop_sink('exp')});

$node->stop;

# ---- 5. SQL objects of 0.5 under this library ------------------------------
my $old = AdstreamTest::node('status_old', create_extension => 0, max_worker_processes => 4,
	'adstream.max_workers' => 3, 'adstream.batch_max_messages' => 500);
sub osql { return $old->safe_psql('postgres', $_[0]); }
# (0.1 and the chain: an adstream--0.5.sql left over from an older build may
# still be installed.)
osql(q{CREATE EXTENSION adstream VERSION '0.1'});
osql(q{ALTER EXTENSION adstream UPDATE TO '0.5'});
osql(qq{SELECT adstream.create_source('v', '$broker->{bootstrap}', 'v')});
my $v = AdstreamTest::loadgen($broker, topic => 'v', count => 3000, seed => 53);
ok($old->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'waiting for update'
	AND last_error LIKE '%version 0.6%version 0.5%ALTER EXTENSION adstream UPDATE%') FROM adstream.source_status WHERE source = 'v'}),
	'0.5 objects: source_status (of 0.5) shows the version mismatch and what to do')
  or diag osql('SELECT * FROM adstream.source_status');
is(osql(q{SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets WHERE source = 'v'}), 0, '0.5 objects: nothing is consumed');
osql(q{ALTER EXTENSION adstream UPDATE});
AdstreamTest::wait_consumed($old, 'v', $v->{sent});
ok($old->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'consuming' AND last_error IS NULL) FROM adstream.source_status WHERE source = 'v'}),
	'after the update: consuming, the error cleared');

# ---- 6. too few max_worker_processes -----------------------------------------
# 4 = the launcher, the logical replication launcher, v's worker and one more.
osql(qq{SELECT adstream.create_source('w', '$broker->{bootstrap}', 'w', options => '{"workers": 2}')});
my $w = AdstreamTest::loadgen($broker, topic => 'w', count => 4000, seed => 54);
ok($old->poll_query_until('postgres', q{SELECT count(*) = 2 FROM adstream.source_status WHERE source = 'w'
	AND worker_state = 'no worker slot' AND worker_pid IS NULL AND lag IS NULL AND lag_stale
	AND last_error LIKE '%max_worker_processes%'}),
	'no worker slot: the two partitions of the worker without a slot say so, with the lag flagged unknown')
  or diag osql('SELECT * FROM adstream.source_status');
ok($old->poll_query_until('postgres', q{SELECT count(*) = 2 FROM adstream.source_status WHERE source = 'w' AND worker_state = 'consuming'}),
	'no worker slot: the other worker consumes its two partitions')
  or diag osql('SELECT * FROM adstream.source_status');
ok($old->poll_query_until('postgres', q{SELECT count(*) > 0 FROM adstream.status_history WHERE name = 'w' AND state = 'no worker slot'}),
	'no worker slot: in the history');
# adstream.max_workers (3) is used up too: v, w and w's waiting worker.
osql(qq{SELECT adstream.create_source('x', '$broker->{bootstrap}', 'other')});
ok($old->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'no worker slot' AND worker_pid IS NULL AND lag_stale
	AND last_error LIKE '%adstream.max_workers (3)%' AND last_error_at IS NOT NULL) FROM adstream.source_status WHERE source = 'x'}),
	'no adstream worker slot: the source says so, naming adstream.max_workers')
  or diag osql('SELECT * FROM adstream.source_status');
ok($old->poll_query_until('postgres', q{SELECT count(*) > 0 FROM adstream.status_history
	WHERE name = 'x' AND state = 'no worker slot' AND error LIKE '%adstream.max_workers%'}),
	'no adstream worker slot: in the history');
$old->append_conf('postgresql.conf', "max_worker_processes = 8\nadstream.max_workers = 8\n");
$old->restart;
AdstreamTest::wait_consumed($old, 'w', $w->{sent});
ok($old->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'consuming' AND last_error IS NULL AND lag = 0 AND NOT lag_stale)
	FROM adstream.source_status WHERE source IN ('v', 'w')}),
	'with slots: every partition consumed, errors cleared, lag current')
  or diag osql('SELECT * FROM adstream.source_status');
ok($old->poll_query_until('postgres', q{SELECT bool_and(worker_state = 'consuming' AND last_error IS NULL AND connected)
	FROM adstream.source_status WHERE source = 'x'}),
	'with adstream worker slots: x consumes, its error cleared')
  or diag osql('SELECT * FROM adstream.source_status');
AdstreamTest::check_truth($old, [ $v->{truth}, $w->{truth} ], 'after the version mismatch and the missing slots');

$old->stop;
$broker->stop;
done_testing();
