#!/usr/bin/perl
# CPU time and memory of processes, from /proc (Linux).
#   proc_stats.pl tree PID     CPU seconds of PID and its live children, plus
#                              the children it has already reaped (cutime,
#                              cstime): for a postmaster, the whole server
#   proc_stats.pl cpu PID...   CPU seconds (user + system) of these processes
#   proc_stats.pl mem PID...   "MAX_VMHWM_KB MAX_VMRSS_KB" over these processes
use strict;
use warnings;
use POSIX ();

my $tick = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

# fields after "pid (comm) ": [0] state, [1] ppid, [11] utime, [12] stime,
# [13] cutime, [14] cstime
sub stat_fields
{
	my ($pid) = @_;
	open(my $f, '<', "/proc/$pid/stat") or return;
	my $line = <$f>;
	close $f;
	return unless defined $line && $line =~ /\)\s(.*)$/s;
	return split ' ', $1;
}

my ($mode, @pids) = @ARGV;
die "usage: proc_stats.pl tree PID | cpu PID... | mem PID...\n" unless $mode && @pids;
if ($mode eq 'tree')
{
	my $root = $pids[0];
	my @s = stat_fields($root) or die "no process $root\n";
	my $ticks = $s[11] + $s[12] + $s[13] + $s[14];
	opendir(my $d, '/proc') or die;
	for my $pid (grep { /^\d+$/ } readdir $d)
	{
		my @c = stat_fields($pid) or next;
		$ticks += $c[11] + $c[12] if $c[1] == $root;
	}
	printf "%.2f\n", $ticks / $tick;
}
elsif ($mode eq 'cpu')
{
	my $ticks = 0;
	for my $pid (@pids)
	{
		my @s = stat_fields($pid) or next;
		$ticks += $s[11] + $s[12];
	}
	printf "%.2f\n", $ticks / $tick;
}
elsif ($mode eq 'mem')
{
	my ($hwm, $rss) = (0, 0);
	for my $pid (@pids)
	{
		open(my $f, '<', "/proc/$pid/status") or next;
		while (<$f>)
		{
			$hwm = $1 if /^VmHWM:\s+(\d+)/ && $1 > $hwm;
			$rss = $1 if /^VmRSS:\s+(\d+)/ && $1 > $rss;
		}
		close $f;
	}
	print "$hwm $rss\n";
}
else
{
	die "unknown mode $mode\n";
}
