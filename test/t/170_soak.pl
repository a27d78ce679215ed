# Randomized fault-injection soak (issue #5), with operator actions (issue
# #11).  Seeded loads of ad events and orders (duplicates, late events,
# malformed records, out-of-order partitions) run in rounds while a fault
# injector acts at random moments: kill -9 of a consumer, of the orders
# worker, of a publisher and of the postmaster, immediate stops,
# SIGSTOP/SIGCONT of a worker, a source broker down and up, partition leader
# moves, Kafka errors injected into Fetch (source), Produce and EndTxn
# (sinks), a sink region down, and the filesystem under the database's
# tablespace filling up.  Among them, operator actions, chosen and timed by
# the seed too: expiry of dedup state (expire_dedup_state and
# drop_expired_partitions), an upstream replay of old events, a new source
# over hours of history, pauses of a source (some longer than the dedup
# horizon), one consumer stalled beyond the horizon while the others run,
# the source's worker count changed, transaction ids burnt and every
# database frozen, the server's time zone changed, and a retention trim of
# messages a paused source had not read.  After each round everything is
# healed and drains, and the aggregates, counters, dead letters, offset
# gaps, attributions and both sinks' Pinot-upsert reconstructions must equal
# the ground truth of every load so far, exactly.
#
# Environment (all optional):
#   SOAK_SECONDS   time under load and faults (150; `make soak`: 1800)
#   SOAK_SEED      seed of loads, faults and actions (default: from the clock; printed)
#   SOAK_RATE      events per second while a round loads (by duration)
#   SOAK_FAULT_GAP mean seconds between faults (3.5)
#   SOAK_ACTION_GAP mean seconds between operator actions (2.5)
#   ADSTREAM_SOAK_DISK  a small dedicated filesystem (scripts/common.sh
#                  mounts a tmpfs when run as root): the database's tables
#                  live on it, and the disk_full fault fills it.
#
# Event time.  The dedup horizon is 60 s (the least it may be) and the main
# load runs at twice real time: a round of S seconds covers 2S seconds of
# event time.  Round k lies in the hour after B_k = BASE + k hours.  A
# "crossing" round (two in three) starts a little before B_k + horizon, so
# that its stream passes that point 40-85% into the round and expiry gives
# up the hour before B_k under load (replays of that hour's events turn
# from duplicates into too_late dead letters just then); it sends no late
# events, which expiry could legitimately make too late.  A "late" round
# starts 17 to 20 minutes after B_k and sends late events (11 minutes
# behind their partition, far beyond the horizon), which no expiry can
# reach, since nothing moves past B_k + 1 hour.  Orders lie within 600 s of their
# clicks and the attribution window is 300 s; after each round, a small
# "tick" load 700 s past the round's events advances the ad-events
# watermark so that every order is judged; rounds an hour apart keep each
# load's ground truth to itself, so the sum of all of them is the expected
# state, checked cumulatively.  New sources over history and retention
# trims lie before their round's event time (see AdstreamSoak::Actions).
#
# Why not compress hours of event time into each round: a partition counts
# as read to its end by the broker's end its worker last saw, which can be
# seconds old (a broker down and its reconnect backoff, failing fetches, a
# stopped worker).  Events written meanwhile are then behind the others by
# those seconds times the compression, and once that exceeds the horizon
# expiry may legitimately give up their hour: the contract's own caveat,
# not a bug.  At twice real time, 20 s of staleness is 40 s of event time,
# inside the 60 s horizon; hours are given up by placing rounds across hour
# boundaries instead, and the new sources' histories (nothing is written to
# them while they are read) cover hours each.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use AdstreamSoak;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use POSIX qw(floor);

# scripts/common.sh passes unset settings as empty strings
sub env_or { my ($name, $default) = @_; return length($ENV{$name} // '') ? $ENV{$name} : $default }
my $duration = env_or('SOAK_SECONDS', 150);
my $seed = env_or('SOAK_SEED', int(time() * 1000) % 1_000_000_007);
my $long = $duration > 600;
my $rate = env_or('SOAK_RATE', $long ? 200 : 800);
my $parts = $long ? 32 : 16;
my $gap = env_or('SOAK_FAULT_GAP', 3.5);
my $action_gap = env_or('SOAK_ACTION_GAP', 2.5);
my ($round_min, $round_max) = $long ? (60, 150) : (30, 50);
$round_max = $duration if $round_max > $duration;
$round_min = $round_max if $round_min > $round_max;
my $horizon_s = 60;    # adstream.dedup_horizon
my $speed = 2;         # event seconds per second of the main load
my $window_s = 300;
my $disk = env_or('ADSTREAM_SOAK_DISK', undef);

# More patience than the default: drains follow piles of faults.
$PostgreSQL::Test::Utils::timeout_default = 600;

srand($seed);
my $t0 = time();
my $logfile = "$PostgreSQL::Test::Utils::tmp_check/soak-$seed.log";
open my $logfh, '>', $logfile or die "cannot write $logfile: $!";
$logfh->autoflush(1);
sub soaklog
{
	my ($msg) = @_;
	print $logfh "$msg\n";
	note $msg;
}
soaklog("SOAK seed=$seed duration=${duration}s rate=$rate/s partitions=$parts fault_gap=${gap}s action_gap=${action_gap}s"
	  . " rounds=${round_min}-${round_max}s dedup_horizon=${horizon_s}s event_time=${speed}x"
	  . " (reproduce: SOAK_SEED=$seed SOAK_SECONDS=$duration)");

# The mock broker keeps 5 MiB per partition and trims silently: refuse a
# load that could not fit (about 230 bytes per event, ticks included, and
# replays up to a tenth more).
my $per_part = $rate * $duration * 1.1 * 1.15 * 230 / $parts;
die sprintf('SOAK_RATE=%d for %d s would put %.1f MiB in each of %d partitions (limit 5 MiB)',
	$rate, $duration, $per_part / 1048576, $parts) if $per_part > 4.5 * 1048576;

# A small filesystem for the tablespace, if one was prepared.
my $tsdir;
if ($disk)
{
	my ($avail) = (`df -Pk '$disk' 2>/dev/null` =~ /\n\S+\s+\d+\s+\d+\s+(\d+)/);
	if (!defined $avail || !-w $disk)
	{
		soaklog("disk_full: ADSTREAM_SOAK_DISK=$disk is not a writable filesystem; fault disabled");
		$disk = undef;
	}
	elsif ($avail > 4 * 1024 * 1024)
	{
		soaklog("disk_full: $disk has $avail KiB free, too large to fill; fault disabled");
		$disk = undef;
	}
	else
	{
		system('rm', '-rf', glob("$disk/ts-*"), "$disk/filler");
		$tsdir = "$disk/ts-$$";
		mkdir $tsdir or die "cannot create $tsdir: $!";
		soaklog("disk_full: tablespace on $disk ($avail KiB free)");
	}
}
else
{
	soaklog('disk_full: not available (ADSTREAM_SOAK_DISK is unset: no small filesystem could be mounted)');
}

# Source cluster of three brokers (leader moves), two sink regions, and a
# cluster of its own for the retention trims (no faults there, so that what
# it trimmed is known to the offset).
my $src = AdstreamTest::Broker->start(brokers => 3, topics => [ "ads:$parts", 'orders:8' ]);
my %sinks = map { $_ => AdstreamTest::Broker->start(
		topics => [ "adstream.ad_stats:$parts", 'adstream.attributed_orders:8' ]) } qw(region_a region_b);
my $trim_broker = AdstreamTest::Broker->start();

my $node = PostgreSQL::Test::Cluster->new('soak');
$node->init;
my %conf = (
	shared_preload_libraries => "'adstream'",
	'adstream.database' => "'postgres'",
	'adstream.node_name' => "'soak'",
	'adstream.max_message_bytes' => 65536,
	'adstream.batch_max_ms' => 100,
	'adstream.batch_max_messages' => 500,
	'adstream.attribution_window' => "'${window_s}s'",
	'adstream.attribution_max_wait' => "'10min'",
	'adstream.dedup_horizon' => "'${horizon_s}s'",
	max_worker_processes => 32,
	restart_after_crash => 'on',
	log_line_prefix => "'%m [%p] '");
$node->append_conf('postgresql.conf', join('', map { "$_ = $conf{$_}\n" } sort keys %conf));
$node->start;
if ($tsdir)
{
	$node->safe_psql('postgres', "CREATE TABLESPACE soak LOCATION '$tsdir'");
	$node->append_conf('postgresql.conf', "default_tablespace = 'soak'\n");
	$node->restart;
}
$node->safe_psql('postgres', 'CREATE EXTENSION adstream');
# The soak's operator actions are its maintenance, at moments the seed
# chooses: no maintenance of the installation's own besides (its retention
# job, run after a round's tick, could drop the clicks of orders not read
# yet; see the report of the soak's operator actions).
if ($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name = 'adstream.auto_maintenance'}))
{
	$node->safe_psql('postgres', 'ALTER SYSTEM SET adstream.auto_maintenance = off');
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
}
$node->safe_psql('postgres', $_) for (
	"SELECT adstream.create_sink('region_a', '$sinks{region_a}{bootstrap}')",
	"SELECT adstream.create_sink('region_b', '$sinks{region_b}{bootstrap}')",
	"SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads', options => '{\"workers\": 2}')",
	"SELECT adstream.create_source('shop', '$src->{bootstrap}', 'orders', 'orders')");
is($node->safe_psql('postgres', q{SELECT count(DISTINCT coalesce(t.spcname, 'pg_default')) || ' ' || min(coalesce(t.spcname, 'pg_default'))
  FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
 WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'i')}),
	$tsdir ? '1 soak' : '1 pg_default', 'adstream\'s tables live in the intended tablespace') ;

my $truth = AdstreamSoak::Truth->new;
$truth->add_source('ads', topic => 'ads', broker => $src, kind => 'ad_events');
$truth->add_source('shop', topic => 'orders', broker => $src, kind => 'orders');

my $actions;
my $faults = AdstreamSoak::Faults->new(node => $node, src => $src, sinks => \%sinks, disk => $disk,
	src_brokers => 3, src_topics => [ [ 'ads', $parts ], [ 'orders', 8 ] ],
	gap_min => $gap * 0.3, gap_max => $gap * 1.7, log => \&soaklog, t0 => $t0,
	release_stops => sub { $actions->release_stops }, stopped => sub { $actions->stalled },
	stopped_pids => sub { $actions->stopped_pids }, hold_kills => sub { $actions->long_stall });
$actions = AdstreamSoak::Actions->new(node => $node, src => $src, trim_broker => $trim_broker, truth => $truth,
	faults => $faults, log => \&soaklog, t0 => $t0, seed => $seed, horizon_s => $horizon_s, speed => $speed,
	long => $long, gap_min => $action_gap * 0.3, gap_max => $action_gap * 1.7,
	hist_budget => int($rate * $duration / 3));

my $max_rounds = int($duration / $round_min) + 2;
# Round k's hour starts at BASE + (k + 7) hours; the hours before the first
# hold the history of new sources.  All of it must lie within
# adstream.minute_retention (7 days) and before now.
die "SOAK_SECONDS=$duration needs $max_rounds hours of event time, more than the 7 days of minute retention"
  if $max_rounds + 9 > 7 * 24;
my $base_ms = (int(time() / 3600) - ($max_rounds + 9)) * 3600 * 1000;
my $dir = PostgreSQL::Test::Utils::tempdir();
my (@failures, @prev_dumps, $ev, $or);
my ($events, $orders, $tick_events, $round) = (0, 0, 0, 0);
my ($crossings, $late_rounds) = (0, 0);
my $loaded = 0;    # seconds under load so far

while ($loaded < $duration - 5 && !@failures)
{
	$round++;
	my $secs = $round_min + rand($round_max - $round_min);
	# no short round at the end: the last one takes what is left
	$secs = $duration - $loaded if $secs > $duration - $loaded || $duration - $loaded - $secs < $round_min;
	my $count = int($rate * $secs);
	my $span_s = int($speed * $secs);
	my $hour_ms = $base_ms + ($round + 7) * 3600 * 1000;
	my $crossing = rand() < 2 / 3;
	my $start_ms = $crossing
	  ? $hour_ms + $horizon_s * 1000 - int((0.4 + rand(0.45)) * $span_s * 1000)
	  : $hour_ms + int((1000 + rand(200)) * 1000);
	# Late events (a minute more than --horizon-s behind their partition) in
	# late rounds only, 11 minutes behind: never before the round's hour.
	# Elsewhere the generator's default horizon, an hour, which also leaves
	# orders where it puts them (it keeps them that close to the newest).
	my @late = $crossing ? ('--late-ratio', 0) : ('--late-ratio', 0.004, '--horizon-s', 600);
	$crossing ? $crossings++ : $late_rounds++;
	my $lseed = $seed * 1000 + $round;
	my $dump = "$dir/ads-$round.dump";
	soaklog(sprintf('t=%7.1fs ROUND %d: loadgen seed %d, %d events at %d/s, event time %s + %d s (%s)',
		time() - $t0, $round, $lseed, $count, $rate, AdstreamSoak::utc($start_ms), $span_s,
		$crossing ? sprintf('passes %s + horizon after %.0f%% of the round: the hour before is given up under load',
			AdstreamSoak::utc($hour_ms), 100 * ($hour_ms + $horizon_s * 1000 - $start_ms) / ($span_s * 1000))
		: 'late events, no hour to give up'));
	my $t_round = time();
	my $run = AdstreamTest::loadgen($src, topic => 'ads', count => $count, seed => $lseed,
		start_ms => $start_ms, background => 1,
		args => [ '--span-s', $span_s, '--rate', $rate, '--users', 2000, '--stores', 50,
			'--orders-topic', 'orders', '--orders', int($count / 8), '--attribution-window-s', $window_s,
			@late, '--dump', $dump ]);
	$actions->begin_round(round => $round, start_ms => $start_ms, span_s => $span_s, secs => $secs, dump => $dump,
		sent_est => $count,
		dumps => [@prev_dumps],
		crossing => $crossing ? ($hour_ms + $horizon_s * 1000 - $start_ms) / ($span_s * 1000) : 0);

	# Faults and actions at random moments while the load runs.
	while ($run->{handle}->pumpable)
	{
		$run->{handle}->pump_nb;
		$faults->tick;
		$actions->tick;
		Time::HiRes::sleep(0.1);
	}
	$loaded += time() - $t_round;
	$faults->heal_all;
	$actions->heal_all;
	AdstreamTest::finish_loadgen($run);
	my ($o) = ${ $run->{out} } =~ /orders_sent=(\d+)/ or die 'no orders in the loadgen summary';
	$events += $run->{sent};
	$orders += $o;
	$truth->add_truth_file($run->{truth}, events => 'ads', orders => 'shop');
	$truth->add_dump('ads', $dump);

	# The tick: events only, past every order of the round.
	my $tick_dump = "$dir/ads-$round-tick.dump";
	my $tick = AdstreamTest::loadgen($src, topic => 'ads', count => 25 * $parts, seed => $lseed + 500,
		start_ms => $start_ms + ($span_s + 700) * 1000,
		args => [ '--span-s', 5, '--horizon-s', $horizon_s, '--dump', $tick_dump ]);
	$events += $tick->{sent};
	$tick_events += $tick->{sent};
	$truth->add_truth_file($tick->{truth}, events => 'ads');
	$truth->add_dump('ads', $tick_dump);
	@prev_dumps = ($dump, $tick_dump);

	soaklog(sprintf('t=%7.1fs ROUND %d: load done (%d events, %d orders); draining', time() - $t0, $round,
		$run->{sent}, $o));
	# A fault just before the end (a killed publisher) may have the server in
	# crash recovery: wait until it answers again (poll_query_until retries).
	$node->poll_query_until('postgres', 'SELECT true')
	  or die 'the server does not answer after the round';
	# What Kafka holds: the mock broker may have stored a retried write
	# twice; no topic may have been trimmed but the trims' own.
	my (@trimmed, $double);
	for my $s (grep { $_->{state} eq 'live' } $truth->sources)
	{
		my ($n, $held) = AdstreamSoak::trimmed_partitions($s->{broker}, $s->{topic});
		push @trimmed, "$s->{topic} ($n partitions)" if $n && !@{ $s->{gaps} };
		$held -= $s->{sent} + $s->{gap};
		die "topic $s->{topic} holds fewer messages than were sent ($held)" if $held < 0;
		$s->{extra} = $held;
		$double += $held;
		AdstreamTest::wait_consumed($node, $s->{name}, $s->{sent} + $s->{gap} + $held);
	}
	soaklog(sprintf('t=%7.1fs ROUND %d: the mock broker stored %d writes twice so far (retries of the idempotent'
		  . ' load generator); they are accounted for', time() - $t0, $round, $double)) if $double;
	ok(!@trimmed, "round $round: no source topic trimmed but by the trims");
	my @round_failures = map { "source topic $_ trimmed (size the soak down)" } @trimmed;

	$ev = AdstreamSoak::check_events(node => $node, truth => $truth, what => "round $round");
	push @round_failures, @{ $ev->{failures} };
	# The round's new sources are checked; out of the ad-events watermark.
	$actions->retire_round_sources;
	$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders')
	  or die 'orders still waiting: ' . $node->safe_psql('postgres', 'SELECT count(*), min(ts) FROM adstream.waiting_orders');
	AdstreamTest::wait_published($node);
	$or = AdstreamSoak::check_orders_sinks(node => $node, truth => $truth, sinks => \%sinks, what => "round $round");
	push @round_failures, @{ $or->{failures} };

	for my $f (@round_failures)
	{
		my $line = "SOAK FAILED seed=$seed round=$round: $f";
		soaklog($line);
		diag $line;
		push @failures, $line;
	}
	soaklog(sprintf('t=%7.1fs ROUND %d: %s (cumulative: %d events, %d orders, %d (ad, minute) rows, %d credited,'
		  . ' %d too_late dead letters of re-sent copies)', time() - $t0, $round, @round_failures ? 'DIVERGED' : 'exact',
		$events, $orders, $ev->{minute_rows}, $or->{credited}, $ev->{too_late}));
	$node->safe_psql('postgres', 'SELECT adstream.prune_outbox()');
}

# Anything that went wrong besides the data, such as a process that
# outlived its postmaster.
for my $a (@{ $faults->{anomalies} })
{
	my $line = "SOAK FAILED seed=$seed: $a";
	soaklog($line);
	diag $line;
}
is(scalar @{ $faults->{anomalies} }, 0, 'every server process exited with its postmaster');
my ($nfaults, $bykind) = $faults->summary;
my ($nactions, $byaction) = $actions->summary;
my $skipped = join(' ', map { "$_=$faults->{skipped}{$_}" } sort keys %{ $faults->{skipped} });
my $askipped = join(' ', map { "$_=$actions->{skipped}{$_}" } sort keys %{ $actions->{skipped} });
my $afailed = join(' ', map { "$_=$actions->{failed}{$_}" } sort keys %{ $actions->{failed} });
my $log_text = PostgreSQL::Test::Utils::slurp_file($node->logfile);
my $crashes = () = $log_text =~ /terminated by signal 9/g;
cmp_ok($nfaults, '>', 0, 'faults were injected');
cmp_ok($nactions, '>', 0, 'operator actions were taken');
ok($crashes > 0, "kill -9 really crashed workers ($crashes times)")
  if grep { $faults->{count}{$_} } qw(kill_consumer kill_orders kill_publisher);
my $ads = $truth->source('ads');
my @created = grep { $_->{scope} eq 'round' } $truth->sources;
my $gaps = 0;
$gaps += @{ $_->{gaps} } for @created;
my $summary = sprintf('SOAK SUMMARY: result=%s data=%s anomalies=%d seed=%d duration=%ds (under load %.0fs, wall %.0fs) rounds=%d'
	  . ' (%d crossing an hour given up, %d with late events) faults=%d (%s) actions=%d (%s) expiry_calls=%d'
	  . ' events_sent=%d (ticks %d, replayed %d, new sources %d) orders_sent=%d mock_double_writes=%d'
	  . ' checked: minute_rows=%d orders=%d credited=%d rejections=%d too_late_resent=%d offset_gaps=%d sinks=2',
	(@failures || @{ $faults->{anomalies} }) ? 'FAIL' : 'PASS', @failures ? 'DIVERGED' : 'exact',
	scalar @{ $faults->{anomalies} }, $seed, $duration, $loaded, time() - $t0, $round, $crossings, $late_rounds,
	$nfaults, $bykind, $nactions, $byaction, $actions->{expiry_calls},
	$events, $tick_events, $ads->{sent} - $events, scalar(@created), $orders,
	eval { my $d = 0; $d += $_->{extra} for $truth->sources; $d }, $ev->{minute_rows}, $or->{orders}, $or->{credited},
	$ev->{rejected}, $ev->{too_late}, $gaps);
soaklog("faults skipped for want of a target: $skipped") if $skipped;
soaklog("actions skipped (no target, or one already running): $askipped") if $askipped;
soaklog("actions that failed (the server was away, a lock timed out): $afailed") if $afailed;
soaklog($summary);
diag $summary;
diag "soak log: $logfile";

$node->stop;
$_->stop for ($src, $trim_broker, values %sinks);
system('rm', '-rf', $tsdir) if $tsdir;
done_testing();
