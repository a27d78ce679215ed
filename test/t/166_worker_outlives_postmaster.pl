# A worker must not outlive its postmaster, whatever call it is blocked in
# (the soak found a publisher that stayed 20 s and more after the
# postmaster's kill -9, stopping the server from starting again; 165 covers
# the one call known before).  Here the publisher's main thread is made to
# block in a call that does not watch for the postmaster (flock, called
# through gdb), and the postmaster is killed: the worker's watchdog thread
# must end the process within its grace of 5 s (src/worker.c).
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use AdstreamSoak;
use IPC::Run;
use Test::More;
use Fcntl qw(:flock);
use Time::HiRes qw(time usleep);

plan skip_all => 'gdb is not installed' unless grep { -x "$_/gdb" } split /:/, $ENV{PATH};

my $sink = AdstreamTest::Broker->start(topics => [ 'adstream.ad_stats:1', 'adstream.attributed_orders:1' ]);
my $node = AdstreamTest::node('pmwatch');
$node->safe_psql('postgres', "SELECT adstream.create_sink('s', '$sink->{bootstrap}')");
$node->poll_query_until('postgres',
	"SELECT worker_state = 'publishing' FROM adstream.sink_status WHERE sink = 's'") or die;
my ($pid) = $node->safe_psql('postgres', "SELECT worker_pid FROM adstream.sink_status WHERE sink = 's'");

# The main thread blocks in flock() on a file this test holds locked: a
# call that does not watch for the postmaster and that signals do not end
# (PostgreSQL's handlers restart it).  gdb lets the signals through.
my $lockfile = $node->basedir . '/held.lock';
open(my $held, '>', $lockfile) or die "$lockfile: $!";
flock($held, LOCK_EX) or die "flock: $!";
my ($out, $err) = ('', '');
my $gdb = IPC::Run::start(
	[ 'gdb', '-p', $pid, '-batch',
	  '-ex', 'handle all nostop noprint pass',
	  '-ex', "call (int) flock((int) open(\"$lockfile\", 0), 2)" ],
	'<', \undef, '>', \$out, '2>', \$err);
my $t = time();
usleep(100_000) until traced($pid) || time() > $t + 30;
ok(traced($pid), "gdb attached to the publisher (pid $pid)") or diag $err;
sleep 3;	# gdb reads the symbols, then the call begins

$node->kill9;
$t = time();
usleep(100_000) while time() < $t + 20 && kill(0, $pid) && !zombie($pid);
my $took = time() - $t;
ok(!kill(0, $pid) || zombie($pid), sprintf('the publisher ended %.1f s after the postmaster\'s death', $took));
cmp_ok($took, '>=', 4, 'not before the grace its normal exit is given');
if (kill 0, $pid)
{
	kill 'KILL', $pid;
}
$gdb->finish;
note "gdb: $out$err";
close $held;
like(slurp_log($node), qr/the postmaster died and this worker \(pid $pid, [^)]+\) had not exited 5 s later/,
	'and said so in the log, naming it');
AdstreamSoak::start_node($node);
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server starts again');
$node->stop;
$sink->stop;
done_testing();

sub traced
{
	my ($p) = @_;
	open(my $fh, '<', "/proc/$p/status") or return 0;
	local $/;
	return <$fh> =~ /^TracerPid:\s*[1-9]/m;
}

sub zombie
{
	my ($p) = @_;
	open(my $fh, '<', "/proc/$p/stat") or return 1;
	my $stat = <$fh>;
	return $stat =~ /\) Z /;
}

sub slurp_log
{
	my ($n) = @_;
	return PostgreSQL::Test::Utils::slurp_file($n->logfile);
}
