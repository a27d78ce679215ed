# Randomized fault-injection soak (issue #5).  Seeded loads of ad events
# and orders (duplicates, late and too-late events, malformed records,
# out-of-order partitions) run in rounds while a fault injector acts at
# random moments: kill -9 of a consumer, of the orders worker, of a
# publisher and of the postmaster, immediate stops, SIGSTOP/SIGCONT of a
# worker, a source broker down and up, partition leader moves, Kafka errors
# injected into Fetch (source), Produce and EndTxn (sinks), a sink region
# down, and the filesystem under the database's tablespace filling up.
# After each round the faults are healed, everything drains, and the
# aggregates, dead letters, attributions and both sinks' Pinot-upsert
# reconstructions must equal the ground truth of every load so far, exactly.
#
# Environment (all optional):
#   SOAK_SECONDS   time under load and faults (150; `make soak`: 1800)
#   SOAK_SEED      seed of loads and faults (default: from the clock; printed)
#   SOAK_RATE      events per second while a round loads (by duration)
#   SOAK_FAULT_GAP mean seconds between faults (3.5)
#   ADSTREAM_SOAK_DISK  a small dedicated filesystem (scripts/common.sh
#                  mounts a tmpfs when run as root): the database's tables
#                  live on it, and the disk_full fault fills it.
#
# Event time: round k's events cover [BASE + k*SPACING, + SPAN]; orders lie
# within 600 s of their clicks and the attribution window is 300 s.  After
# each round, a small "tick" load far ahead advances the ad-events watermark
# so that every order of the round is judged.  SPACING keeps one round's
# orders (and the tick's clicks) out of every other round's attribution
# window, so each load's ground truth holds on its own and the sum of all
# of them is the expected state, checked cumulatively.
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
my ($round_min, $round_max) = $long ? (60, 150) : (30, 50);
$round_max = $duration if $round_max > $duration;
$round_min = $round_max if $round_min > $round_max;
my $span_s = 120;
my $window_s = 300;
my $spacing_s = $span_s + 1700;    # see the header
my $tick_offset_s = $span_s + 700;
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
soaklog("SOAK seed=$seed duration=${duration}s rate=$rate/s partitions=$parts fault_gap=${gap}s"
	  . " rounds=${round_min}-${round_max}s (reproduce: SOAK_SEED=$seed SOAK_SECONDS=$duration)");

# The mock broker keeps 5 MiB per partition and trims silently: refuse a
# load that could not fit (about 230 bytes per event, ticks included).
my $per_part = $rate * $duration * 1.1 * 230 / $parts;
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

# Source cluster of three brokers (leader moves), two sink regions.
my $src = AdstreamTest::Broker->start(brokers => 3, topics => [ "ads:$parts", 'orders:8' ]);
my %sinks = map { $_ => AdstreamTest::Broker->start(
		topics => [ "adstream.ad_stats:$parts", 'adstream.attributed_orders:8' ]) } qw(region_a region_b);

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
$node->safe_psql('postgres', $_) for (
	"SELECT adstream.create_sink('region_a', '$sinks{region_a}{bootstrap}')",
	"SELECT adstream.create_sink('region_b', '$sinks{region_b}{bootstrap}')",
	"SELECT adstream.create_source('ads', '$src->{bootstrap}', 'ads', options => '{\"workers\": 2}')",
	"SELECT adstream.create_source('shop', '$src->{bootstrap}', 'orders', 'orders')");
is($node->safe_psql('postgres', q{SELECT count(DISTINCT coalesce(t.spcname, 'pg_default')) || ' ' || min(coalesce(t.spcname, 'pg_default'))
  FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
 WHERE c.relnamespace = 'adstream'::regnamespace AND c.relkind IN ('r', 'i')}),
	$tsdir ? '1 soak' : '1 pg_default', 'adstream\'s tables live in the intended tablespace') ;

my $faults = AdstreamSoak::Faults->new(node => $node, src => $src, sinks => \%sinks, disk => $disk,
	src_brokers => 3, src_topics => [ [ 'ads', $parts ], [ 'orders', 8 ] ],
	gap_min => $gap * 0.3, gap_max => $gap * 1.7, log => \&soaklog, t0 => $t0);

my $max_rounds = int($duration / $round_min) + 2;
my $base_ms = int(time() * 1000) - ($max_rounds + 2) * $spacing_s * 1000 - 3600 * 1000;
my (@truths, @failures);
my ($events, $orders, $tick_events, $round) = (0, 0, 0, 0);
my $mock_copies = 0;    # writes the mock broker stored twice
my $loaded = 0;    # seconds under load so far
my $last;

while ($loaded < $duration - 5 && !@failures)
{
	$round++;
	my $secs = $round_min + rand($round_max - $round_min);
	# no short round at the end: the last one takes what is left
	$secs = $duration - $loaded if $secs > $duration - $loaded || $duration - $loaded - $secs < $round_min;
	my $count = int($rate * $secs);
	my $start_ms = $base_ms + $round * $spacing_s * 1000;
	my $lseed = $seed * 1000 + $round;
	soaklog(sprintf('t=%7.1fs ROUND %d: loadgen seed %d, %d events at %d/s, event time from %d',
		time() - $t0, $round, $lseed, $count, $rate, $start_ms));
	my $t_round = time();
	my $run = AdstreamTest::loadgen($src, topic => 'ads', count => $count, seed => $lseed,
		start_ms => $start_ms, background => 1,
		args => [ '--span-s', $span_s, '--rate', $rate, '--users', 2000, '--stores', 50,
			'--orders-topic', 'orders', '--orders', int($count / 8), '--attribution-window-s', $window_s ]);

	# Faults at random moments while the load runs.
	while ($run->{handle}->pumpable)
	{
		$run->{handle}->pump_nb;
		$faults->tick;
		Time::HiRes::sleep(0.1);
	}
	$loaded += time() - $t_round;
	$faults->heal_all;
	AdstreamTest::finish_loadgen($run);
	my ($o) = ${ $run->{out} } =~ /orders_sent=(\d+)/ or die 'no orders in the loadgen summary';
	$events += $run->{sent};
	$orders += $o;
	push @truths, $run->{truth};

	# The tick: events only, past every order of the round.
	my $tick = AdstreamTest::loadgen($src, topic => 'ads', count => 25 * $parts, seed => $lseed + 500,
		start_ms => $start_ms + $tick_offset_s * 1000, args => [ '--span-s', 5 ]);
	$events += $tick->{sent};
	$tick_events += $tick->{sent};
	push @truths, $tick->{truth};

	soaklog(sprintf('t=%7.1fs ROUND %d: load done (%d events, %d orders); draining', time() - $t0, $round,
		$run->{sent}, $o));
	# What Kafka holds: the mock broker may have stored a retried write twice.
	my (%held, %trimmed);
	($trimmed{ads}, $held{ads}) = AdstreamSoak::trimmed_partitions($src, 'ads');
	($trimmed{orders}, $held{shop}) = AdstreamSoak::trimmed_partitions($src, 'orders');
	my %extra = (ads => $held{ads} - $events, shop => $held{shop} - $orders);
	die "the source topics hold fewer messages than were sent: @{[ %held ]}" if grep { $_ < 0 } values %extra;
	if ($extra{ads} + $extra{shop} > $mock_copies)
	{
		soaklog(sprintf('t=%7.1fs ROUND %d: the mock broker stored %d event and %d order writes twice so far'
			  . ' (retries of the idempotent load generator); they are accounted for', time() - $t0, $round,
			$extra{ads}, $extra{shop}));
		$mock_copies = $extra{ads} + $extra{shop};
	}
	AdstreamTest::wait_consumed($node, 'ads', $held{ads});
	AdstreamTest::wait_consumed($node, 'shop', $held{shop});
	$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders')
	  or die 'orders still waiting: ' . $node->safe_psql('postgres', 'SELECT count(*), min(ts) FROM adstream.waiting_orders');
	AdstreamTest::wait_published($node);

	$last = AdstreamSoak::check_all(node => $node, truths => \@truths, sinks => \%sinks,
		what => "round $round", extra => \%extra);
	for my $topic ('ads', 'orders')
	{
		ok($trimmed{$topic} == 0, "round $round: source topic $topic: nothing trimmed");
		push @{ $last->{failures} }, "source topic $topic: $trimmed{$topic} partitions trimmed (size the soak down)"
		  if $trimmed{$topic};
	}
	for my $f (@{ $last->{failures} })
	{
		my $line = "SOAK FAILED seed=$seed round=$round: $f";
		soaklog($line);
		diag $line;
		push @failures, $line;
	}
	soaklog(sprintf('t=%7.1fs ROUND %d: %s (cumulative: %d events, %d orders, %d (ad, minute) rows, %d credited)',
		time() - $t0, $round, @{ $last->{failures} } ? 'DIVERGED' : 'exact', $events, $orders,
		$last->{minute_rows}, $last->{credited}));
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
my $skipped = join(' ', map { "$_=$faults->{skipped}{$_}" } sort keys %{ $faults->{skipped} });
my $log_text = PostgreSQL::Test::Utils::slurp_file($node->logfile);
my $crashes = () = $log_text =~ /terminated by signal 9/g;
cmp_ok($nfaults, '>', 0, 'faults were injected');
ok($crashes > 0, "kill -9 really crashed workers ($crashes times)")
  if grep { $faults->{count}{$_} } qw(kill_consumer kill_orders kill_publisher);
my $summary = sprintf('SOAK SUMMARY: result=%s data=%s anomalies=%d seed=%d duration=%ds (under load %.0fs, wall %.0fs) rounds=%d faults=%d (%s)'
	  . ' events_sent=%d (ticks %d) orders_sent=%d mock_double_writes=%d checked: minute_rows=%d orders=%d credited=%d rejections=%d sinks=2',
	(@failures || @{ $faults->{anomalies} }) ? 'FAIL' : 'PASS', @failures ? 'DIVERGED' : 'exact',
	scalar @{ $faults->{anomalies} }, $seed, $duration, $loaded, time() - $t0, $round, $nfaults, $bykind,
	$events, $tick_events, $orders, $mock_copies, $last->{minute_rows}, $last->{orders}, $last->{credited}, $last->{rejected});
soaklog("faults skipped for want of a target: $skipped") if $skipped;
soaklog($summary);
diag $summary;
diag "soak log: $logfile";

$node->stop;
$_->stop for ($src, values %sinks);
system('rm', '-rf', $tsdir) if $tsdir;
done_testing();
