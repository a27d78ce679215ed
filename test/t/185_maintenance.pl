# Maintenance nobody has to remember (issue #15).  A server set up as
# README's "Installing into your own server" says, once with pg_cron and once
# without, and nothing scheduled by hand.  A small dedup index (1000 ids) and
# a short horizon (60 s); a stream over six hours of event time with almost
# four times more distinct ids than the index holds:
#   - ingestion finishes, every count equal to the ground truth, because
#     expiry runs by itself (the launcher's adstream_dedup_expiry as soon as
#     the index is 80% full, and the scheduled adstream_retention);
#   - the jobs ran by themselves, in pg_cron (visible in cron.job and
#     cron.job_run_details) or in the launcher, and maintenance_status says
#     which, when and with what result;
#   - adstream.auto_maintenance = off stops them (and removes adstream's
#     pg_cron jobs): a second load then fills the index and stops, and
#     source_status warns of the full index and of an overdue job, each with
#     a hint naming the job; on again, expiry makes room within seconds and
#     ingestion finishes exact.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;
use Time::HiRes qw(time);

my $CAPACITY = 1000;

sub run_case
{
	my ($cron) = @_;
	my $mode = $cron ? 'pg_cron' : 'launcher';
	my $t0 = time();
	my $broker = AdstreamTest::Broker->start(topics => ['ads:1']);

	# README, "Installing into your own server" (with pg_cron: its set-up too);
	# the database is postgres here, where the test helpers look.
	my %readme = (
		shared_preload_libraries => $cron ? "'adstream,pg_cron'" : "'adstream'",
		'adstream.database' => "'postgres'",
		max_worker_processes => 20,
		# the product's default, which the test helpers turn off
		'adstream.auto_maintenance' => 'on');
	%readme = (%readme, 'cron.database_name' => "'postgres'", 'cron.use_background_workers' => 'on') if $cron;
	my $node = AdstreamTest::node("maint_$mode", create_extension => 0, %readme,
		# this test: a small index, a short horizon, batches that do not span hours,
		# and the scheduled jobs often enough to see them (pg_cron 1.4: every minute)
		'adstream.dedup_index_size' => $CAPACITY,
		'adstream.dedup_horizon' => "'60s'",
		'adstream.batch_max_messages' => 100,
		'adstream.retention_interval' => "'10s'",
		'adstream.rollups_interval' => "'5s'");
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron') if $cron;
	$node->safe_psql('postgres', 'CREATE EXTENSION adstream');
	is($node->safe_psql('postgres', q{SELECT count(*) FROM adstream.maintenance_status WHERE last_start IS NOT NULL}),
		0, "$mode: nothing has run before the first source");
	$node->safe_psql('postgres', "SELECT adstream.create_source('ads', '$broker->{bootstrap}', 'ads')");

	# Six hours of event time from an hour boundary eight hours ago.
	my $start = (int(time() / 3600) - 8) * 3600 * 1000;
	my @common = ('--partitions', 1, '--horizon-s', 60, '--late-ratio', 0);
	my $a = AdstreamTest::loadgen($broker, topic => 'ads', count => 4000, seed => 1851, start_ms => $start,
		args => [ @common, '--span-s', 6 * 3600 ]);
	AdstreamTest::wait_consumed($node, 'ads', $a->{sent});
	AdstreamTest::check_truth($node, [ $a->{truth} ], "$mode: six hours through a dedup index of $CAPACITY");
	my $unique = (grep { /^total,unique,/ } split /\n/, PostgreSQL::Test::Utils::slurp_file($a->{truth}))[0] =~ s/.*,//r;
	cmp_ok($unique, '>', 3 * $CAPACITY, "$mode: the stream has $unique distinct ids, over three times the index");
	is($node->safe_psql('postgres', q{SELECT dedup_expired_before >= to_timestamp(} . ($start / 1000) . q{) + interval '4 hours'
		FROM adstream.sources WHERE name = 'ads'}), 't', "$mode: the source's dedup state was given up hour by hour");
	is($node->safe_psql('postgres', q{SELECT runs_by || ' ' || (last_start IS NOT NULL) || ' ' || coalesce(last_error, '-')
		FROM adstream.maintenance_status WHERE job = 'adstream_dedup_expiry'}),
		'launcher true -', "$mode: the launcher ran dedup expiry when the index filled");
	note $node->safe_psql('postgres', 'SELECT job, runs_by, last_start, last_duration, last_result, last_error FROM adstream.maintenance_status');

	if ($cron)
	{
		is($node->safe_psql('postgres', q{SELECT string_agg(jobname || ' ' || schedule || ' ' || command, E'\n' ORDER BY jobname)
			FROM cron.job WHERE database = 'postgres'}), join("\n",
			q{adstream_partitions */10 * * * * SELECT adstream.run_maintenance('adstream_partitions')},
			q{adstream_retention * * * * * SELECT adstream.run_maintenance('adstream_retention')},
			q{adstream_rollups * * * * * SELECT adstream.run_maintenance('adstream_rollups')}),
			'pg_cron: the jobs are in cron.job, scheduled by themselves');
		ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
			WHERE j.jobname = 'adstream_rollups' AND d.status = 'succeeded'}), 'pg_cron: pg_cron ran the rollups job');
	}
	# pg_cron runs adstream_partitions at minutes divisible by 10 only
	my @ran = $cron ? qw(retention rollups) : qw(partitions retention rollups);
	my $ran = join(', ', map { "'adstream_$_'" } @ran);
	$node->poll_query_until('postgres', qq{SELECT count(*) = @{[ scalar @ran ]} FROM adstream.maintenance_status
		WHERE job IN ($ran) AND last_start IS NOT NULL})
	  or diag $node->safe_psql('postgres', 'SELECT * FROM adstream.maintenance_status');
	is($node->safe_psql('postgres', qq{SELECT string_agg(job || ' ' || runs_by || ' ' || (last_start IS NOT NULL)
			|| ' ' || coalesce(last_error, '-') || ' ' || overdue, ', ' ORDER BY job)
		FROM adstream.maintenance_status WHERE job IN ($ran)}),
		join(', ', map { "adstream_$_ $mode true - false" } @ran),
		"$mode: maintenance_status shows the scheduled jobs run by $mode, without error");
	is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT runs_by, ',') FROM adstream.maintenance_status
		WHERE job <> 'adstream_dedup_expiry'}), $mode, "$mode: every scheduled job runs in $mode");
	if (!$cron)
	{
		cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM pg_inherits i
			WHERE i.inhparent = 'adstream.ad_stats_minute'::regclass
			  AND adstream._partition_upper(i.inhrelid) > now() + interval '1 day'}), '>=', 1,
			'launcher: partitions for the coming day were created ahead');
		ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.rollup_pending'),
			'launcher: the rollups are refreshed');
	}

	# One switch off: no job runs (adstream's pg_cron jobs go), and a second
	# load, an hour later in event time, fills the index and stops.
	$node->append_conf('postgresql.conf', "adstream.auto_maintenance = off\nadstream.rollups_interval = '1s'\n");
	$node->reload;
	$node->poll_query_until('postgres', q{SELECT bool_and(runs_by = 'by hand') FROM adstream.maintenance_status})
	  or die 'maintenance did not turn off: ' . $node->safe_psql('postgres', 'SELECT * FROM adstream.maintenance_status');
	is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job}), 0, 'pg_cron: switched off, the jobs are gone from cron.job')
	  if $cron;
	my $b = AdstreamTest::loadgen($broker, topic => 'ads', count => 950, seed => 1852,
		start_ms => $start + (6 * 60 + 10) * 60_000, args => [ @common, '--span-s', 1800 ]);
	$node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM adstream.source_status
		WHERE warning ~ '^the dedup index is (full|[89][0-9]% full)' AND last_error LIKE '%dedup index is full%'})
	  or die 'the full index was not reported: ' . $node->safe_psql('postgres', 'SELECT * FROM adstream.source_status');
	like($node->safe_psql('postgres', 'SELECT DISTINCT warning_hint FROM adstream.source_status'),
		qr/adstream\.auto_maintenance is off: run adstream\.run_maintenance\('adstream_retention'\)/,
		"$mode: source_status warns of the full index, with a hint that names the job");
	# The rollups job (now every second, by hand) is overdue once its last
	# success is two intervals and 30 s old: make it an hour old.
	$node->safe_psql('postgres', q{UPDATE adstream.maintenance_runs SET last_ok = last_ok - interval '1 hour' WHERE job = 'adstream_rollups'});
	ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM adstream.source_status
		WHERE warning LIKE '%maintenance job adstream_rollups is overdue%'
		  AND warning_hint LIKE '%Call adstream.run_maintenance(''adstream_rollups'') every 00:00:01%'}),
		"$mode: source_status warns of the overdue job, with a hint that names it");
	cmp_ok($node->safe_psql('postgres', q{SELECT sum(next_offset) FROM adstream.offsets}), '<', $a->{sent} + $b->{sent},
		"$mode: with maintenance off, ingestion stopped at the full index");

	# On again: expiry makes room at once, and the second load finishes.
	my $on = time();
	$node->append_conf('postgresql.conf', "adstream.auto_maintenance = on\nadstream.rollups_interval = '5s'\n");
	$node->reload;
	AdstreamTest::wait_consumed($node, 'ads', $a->{sent} + $b->{sent});
	my $resumed = time() - $on;
	cmp_ok($resumed, '<', 8, sprintf('%s: switched on, ingestion finished %.1f s later', $mode, $resumed));
	AdstreamTest::check_truth($node, [ $a->{truth}, $b->{truth} ], "$mode: after the second load");
	is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE command LIKE 'SELECT adstream.run_maintenance(%'}), 3,
		'pg_cron: switched on, the jobs are back in cron.job') if $cron;
	is($node->safe_psql('postgres', 'SELECT entries <= capacity FROM adstream.dedup_index_status()'), 't',
		"$mode: the index never held more than its capacity");
	unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/maintenance job \S+ failed|could not plan maintenance/,
		"$mode: no maintenance job failed");

	$node->stop;
	$broker->stop;
	note sprintf('%s: %.0f s', $mode, time() - $t0);
}

run_case(0);
run_case(1);
done_testing();
