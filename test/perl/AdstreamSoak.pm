
# AdstreamSoak: the fault injector, the operator actions and the exact
# checker of the randomized soak (test/t/170_soak.pl, `make soak`).
#
#   my $truth = AdstreamSoak::Truth->new;            # what every source must hold
#   my $f = AdstreamSoak::Faults->new(node => $node, src => $broker, sinks => \%sinks,
#                                     disk => $disk, log => \&log);
#   my $a = AdstreamSoak::Actions->new(node => $node, src => $broker, truth => $truth, ...);
#   $a->begin_round(...);
#   while ($load_running) { $f->tick; $a->tick }     # at random moments
#   $f->heal_all; $a->heal_all;                      # everything back up, server running
#   my $r = AdstreamSoak::check_events(node => $node, truth => $truth, ...);
#   my $r2 = AdstreamSoak::check_orders_sinks(node => $node, truth => $truth, sinks => \%sinks, ...);
#
# Faults take their random choices from Perl's rand(), which the driver
# seeds with the soak's seed; operator actions from a generator of their
# own (AdstreamSoak::Rng) seeded from it too.  So the sequences of fault and
# action kinds and targets follow from the seed (their exact moments depend
# on the machine's timing).

package AdstreamSoak;

use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# Runs SQL without dying; returns its output, or undef while the server is
# down or recovering, or when the SQL failed (the error in $$err_ref).
sub try_sql
{
	my ($node, $sql, $err_ref) = @_;
	my ($out, $err, $timed_out) = ('', '', 0);
	# psql may exit while it is still being sent a long statement (the
	# server crashed under it): IPC::Run dies of the broken pipe.  A
	# statement can wait without end for a process this module stopped
	# (SIGSTOP while it held the dedup index's LWLock, which no timeout
	# interrupts): give up on it, so that the stop ends on time.
	my $rc = eval {
		$node->psql('postgres', $sql, stdout => \$out, stderr => \$err, on_error_die => 0,
			extra_params => [ '-v', 'ON_ERROR_STOP=1' ], timeout => 90, timed_out => \$timed_out);
	};
	$err = "$@" if !defined $rc;
	$err = 'timed out after 90 s' if $timed_out;
	$$err_ref = $err if $err_ref;
	return defined $rc && $rc == 0 ? $out : undef;
}

# pids of processes whose parent is $ppid (from /proc)
sub children_of
{
	my ($ppid) = @_;
	my @kids;
	for my $stat (glob '/proc/[0-9]*/stat')
	{
		open my $fh, '<', $stat or next;
		my $line = <$fh>;
		close $fh;
		next unless defined $line && $line =~ /^(\d+) \(.*\) \S (\d+) /s;
		push @kids, $1 if $2 == $ppid;
	}
	return @kids;
}

# A process's title (ps shows the same)
sub proc_title
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/cmdline" or return '?';
	local $/;
	my $t = <$fh> // '?';
	$t =~ s/\0+$//;
	$t =~ s/\0/ /g;
	return $t;
}

# Is the node's postmaster alive?
sub server_alive
{
	my ($node) = @_;
	return defined $node->{_pid} && kill(0, $node->{_pid});
}

# Starts the node, retrying while orphans of a killed postmaster still hold
# its shared memory.
sub start_node
{
	my ($node) = @_;
	my $deadline = time() + 120;
	while (1)
	{
		# pg_ctl prints the whole log on a failure; keep it out of the TAP output
		my $ok;
		{
			open my $save, '>&', \*STDOUT or die;
			open STDOUT, '>', '/dev/null' or die;
			$ok = $node->start(fail_ok => 1);
			open STDOUT, '>&', $save or die;
		}
		return 1 if $ok;
		die 'the server did not start within 120 s; see ' . $node->logfile if time() > $deadline;
		sleep 1;
	}
}

# Records of a load generator dump (--dump format: "PARTITION KEYLEN
# VALUELEN" or "orders PARTITION ...", then key, value and a newline), the
# ad events only: [partition, key or undef, value].  A dump that is still
# being written ends at its last complete record.
sub read_dump
{
	my ($file) = @_;
	open my $fh, '<:raw', $file or return [];
	local $/;
	my $buf = <$fh> // '';
	close $fh;
	my ($pos, $len, @recs) = (0, length $buf);
	while ($pos < $len)
	{
		my $nl = index($buf, "\n", $pos);
		last if $nl < 0;
		my ($orders, $p, $kl, $vl) = substr($buf, $pos, $nl - $pos) =~ /^(orders )?(\d+) (-?\d+) (-?\d+)$/
		  or die "$file: bad dump header at byte $pos";
		my ($k, $v) = ($kl < 0 ? 0 : $kl, $vl < 0 ? 0 : $vl);
		last if $nl + 1 + $k + $v + 1 > $len;
		push @recs, [ $p, $kl < 0 ? undef : substr($buf, $nl + 1, $k), $vl < 0 ? undef : substr($buf, $nl + 1 + $k, $v) ]
		  unless $orders;
		$pos = $nl + 1 + $k + $v + 1;
	}
	return \@recs;
}

# Writes records [partition, key, value] in the dump format that
# adstream-loadgen --replay produces as they are.
sub write_dump
{
	my ($file, $recs) = @_;
	open my $fh, '>:raw', $file or die "cannot write $file: $!";
	for my $r (@$recs)
	{
		my ($p, $k, $v) = @$r;
		print $fh "$p " . (defined $k ? length $k : -1) . ' ' . (defined $v ? length $v : -1) . "\n"
		  . ($k // '') . ($v // '') . "\n";
	}
	close $fh or die "cannot write $file: $!";
}

# The event id a record carries (the load generator writes ids lower-case).
sub event_id_of
{
	my ($value) = @_;
	return defined $value && $value =~ /"event_id"\s*:\s*"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"/
	  ? $1 : undef;
}

# ---------------------------------------------------------------------------
# A small generator of its own for the operator actions (xorshift32), so
# that their choices follow from the seed whatever the faults draw.
# ---------------------------------------------------------------------------
package AdstreamSoak::Rng;

sub new
{
	my ($class, $seed) = @_;
	my $x = ($seed * 2654435761 + 0x5bd1e995) % 4294967296;
	$x = 0x9e3779b9 if $x == 0;
	return bless { x => $x }, $class;
}

# uniform in [0, 1)
sub rand
{
	my ($self, $scale) = @_;
	my $x = $self->{x};
	$x ^= ($x << 13) & 0xffffffff;
	$x ^= $x >> 17;
	$x ^= ($x << 5) & 0xffffffff;
	$self->{x} = $x;
	return $x / 4294967296 * ($scale // 1);
}

sub int { my ($self, $n) = @_; return CORE::int($self->rand($n)); }
sub pick { my ($self, $list) = @_; return $list->[ $self->int(scalar @$list) ]; }

# A random version 4 UUID
sub uuid
{
	my ($self) = @_;
	return sprintf('%08x-%04x-4%03x-%04x-%04x%08x', $self->int(2**32), $self->int(2**16), $self->int(2**12),
		0x8000 | $self->int(2**14), $self->int(2**16), $self->int(2**32));
}

# ---------------------------------------------------------------------------
# The ground truth, per source: what each source's topic was sent, what it
# must have counted, rejected and skipped, and how many copies of each event
# id it was sent (a too_late dead letter is legitimate only for a re-sent
# copy of an event that was counted).
# ---------------------------------------------------------------------------
package AdstreamSoak::Truth;

sub new { return bless { files => [], src => {}, names => [] }, shift }

# kind: ad_events or orders; scope: soak (lives through the soak) or round
# (created by an action, retired at the round's end)
sub add_source
{
	my ($self, $name, %o) = @_;
	return if $self->{src}{$name};
	$self->{src}{$name} = { name => $name, scope => 'soak', %o, sent => 0, unique => 0, duplicates => 0,
		rejected => 0, gap => 0, rejects => {}, copies => {}, extra => 0, state => 'live', too_late => 0,
		gaps => [] };
	push @{ $self->{names} }, $name;
}

sub source { return $_[0]->{src}{ $_[1] } // die "no source $_[1]" }
sub sources { my ($self) = @_; return map { $self->{src}{$_} } @{ $self->{names} } }
sub live { return grep { $_->{state} ne 'dropped' } $_[0]->sources }
# The truth files of what must be in ad_stats_minute and the orders: not
# those of a source dropped with forget_counts.
sub files
{
	my ($self) = @_;
	return [ map { $_->[0] } grep { !($_->[1] && $self->{src}{ $_->[1] }{forgotten}) } @{ $self->{files} } ];
}

# A truth file of the load generator: its minute and order lines are read
# by SQL (AdstreamTest::truth_sql), its totals and rejections here, the
# event lines for the source named by events, the order lines for orders.
sub add_truth_file
{
	my ($self, $file, %o) = @_;
	push @{ $self->{files} }, [ $file, $o{events} ];
	my ($ev, $or) = map { defined $_ ? $self->source($_) : undef } @o{qw(events orders)};
	open my $fh, '<', $file or die "cannot read $file: $!";
	while (my $line = <$fh>)
	{
		next if $line =~ /^(minute|order),/;
		chomp $line;
		if ($line =~ /^reject,([^,]*),(\d+)$/)
		{
			$ev->{rejects}{$1} += $2 if $ev;
		}
		elsif ($line =~ /^reject_order,([^,]*),(\d+)$/)
		{
			$or->{rejects}{$1} += $2 if $or;
		}
		elsif ($line =~ /^total,orders_(sent|unique|duplicates|rejected),(\d+)$/)
		{
			$or->{$1} += $2 if $or;
		}
		elsif ($line =~ /^total,(sent|unique|duplicates|rejected|gap),(\d+)$/)
		{
			$ev->{$1} += $2 if $ev;
		}
	}
	close $fh;
}

# Copies per event id of what a dump (or a replay file) sent to a source.
sub add_dump
{
	my ($self, $name, $file) = @_;
	my $s = $self->source($name);
	for my $r (@{ AdstreamSoak::read_dump($file) })
	{
		my $id = AdstreamSoak::event_id_of($r->[2]);
		$s->{copies}{$id}++ if defined $id;
	}
}

# Valid events sent again (an upstream replay): each one more duplicate, or
# a too_late dead letter once its hour is given up.
sub add_replay
{
	my ($self, $name, $ids) = @_;
	my $s = $self->source($name);
	$s->{sent} += @$ids;
	$s->{duplicates} += @$ids;
	$s->{copies}{$_}++ for @$ids;
}

package AdstreamSoak;

# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------
package AdstreamSoak::Faults;

*proc_title = \&AdstreamSoak::proc_title;

use strict;
use warnings;
use Time::HiRes qw(time usleep);

# Kafka error codes injected by kind.  Retriable ones make librdkafka retry;
# MSG_SIZE_TOO_LARGE fails a produce for good, so the publisher must abort
# its Kafka transaction and send the page again; _TRANSPORT drops the
# connection instead of answering.
my %ERRORS = (
	fetch_errors => [ 'Fetch', [qw(NOT_LEADER_OR_FOLLOWER UNKNOWN_TOPIC_OR_PART LEADER_NOT_AVAILABLE
		  REQUEST_TIMED_OUT KAFKA_STORAGE_ERROR FENCED_LEADER_EPOCH UNKNOWN_LEADER_EPOCH _TRANSPORT)], 1, 25 ],
	produce_errors => [ 'Produce', [qw(NOT_LEADER_OR_FOLLOWER NOT_ENOUGH_REPLICAS REQUEST_TIMED_OUT
		  MSG_SIZE_TOO_LARGE _TRANSPORT)], 1, 6 ],
	endtxn_errors => [ 'EndTxn', [qw(COORDINATOR_NOT_AVAILABLE NOT_COORDINATOR CONCURRENT_TRANSACTIONS
		  COORDINATOR_LOAD_IN_PROGRESS _TRANSPORT)], 1, 6 ],
);

our @KINDS = qw(kill_consumer kill_orders kill_publisher kill_postmaster immediate_stop sigstop
  broker_down leader_change fetch_errors produce_errors endtxn_errors region_down disk_full);

sub new
{
	my ($class, %o) = @_;
	my $self = bless {
		%o,
		active => {},          # kind => { until => t, ... } for faults that last
		count => { map { $_ => 0 } @KINDS },
		skipped => {},
		anomalies => [],
		next_at => time() + 1 + rand(2),
		t0 => $o{t0} // time(),
	}, $class;
	$self->{kinds} = [ grep { $_ ne 'disk_full' || $o{disk} } @KINDS ];
	return $self;
}

sub log
{
	my ($self, $msg) = @_;
	$self->{log}->(sprintf('t=%7.1fs %s', time() - $self->{t0}, $msg));
}

sub pick { return $_[0]->[ int(rand(scalar @{ $_[0] })) ] }

sub sql { return AdstreamSoak::try_sql($_[0]->{node}, $_[1]) }

# pids of the consumers of one source, or of every source of a kind
sub pids_of_source
{
	my ($self, $source, $kind) = @_;
	my $where = defined $kind ? "s.kind = '$kind'" : "s.name = '$source'";
	my $out = $self->sql(qq{SELECT w.pid FROM adstream.worker_status() w
  JOIN adstream.sources s ON s.id = w.source_id WHERE $where AND w.pid IS NOT NULL ORDER BY 1}) // '';
	return grep { /^\d+$/ } split /\n/, $out;
}

# Ends every stop of a process, this module's and the operator actions'
# (a stopped process would outlive its postmaster, or not die at all).
sub release_stops
{
	my ($self) = @_;
	$self->heal('sigstop');
	$self->{release_stops}->() if $self->{release_stops};
}

sub pids_of_publishers
{
	my ($self) = @_;
	my $out = $self->sql(q{SELECT s.name || ' ' || w.pid FROM adstream.publisher_status() w
  JOIN adstream.sinks s ON s.id = w.sink_id WHERE w.pid IS NOT NULL ORDER BY 1}) // '';
	return map { [ split / / ] } grep { /^\S+ \d+$/ } split /\n/, $out;
}

# Called often while a load runs: ends faults whose time is up, and starts a
# new one when its random moment has come.
sub tick
{
	my ($self) = @_;
	my $now = time();
	for my $kind (sort keys %{ $self->{active} })
	{
		$self->heal($kind) if $self->{active}{$kind}{until} <= $now;
	}
	return if $now < $self->{next_at};
	$self->{next_at} = $now + $self->{gap_min} + rand($self->{gap_max} - $self->{gap_min});
	for (1 .. 10)
	{
		my $kind = pick($self->{kinds});
		next if $self->{active}{$kind};
		# The disk fills alone: a crash while recovery cannot write would
		# stop the server for good, which is PostgreSQL's behaviour, not ours.
		next if $self->{active}{disk_full} && $kind =~ /^(kill_|immediate_stop|sigstop)/;
		next if $kind eq 'disk_full' && ($self->{active}{sigstop} || ($self->{stopped} && $self->{stopped}->()));
		# A crash restarts every worker, which would end an operator's long
		# stall of one of them before it lasted beyond the horizon.
		next if $kind =~ /^(kill_|immediate_stop)/ && $self->{hold_kills} && $self->{hold_kills}->();
		my $what = $self->inject($kind);
		if (defined $what)
		{
			$self->{count}{$kind}++;
			$self->log("FAULT $kind $what");
		}
		else
		{
			$self->{skipped}{$kind}++;
		}
		return;
	}
}

sub inject
{
	my ($self, $kind) = @_;
	my $node = $self->{node};
	if ($kind eq 'kill_consumer' || $kind eq 'kill_orders')
	{
		# consumers of every ad-events source: the soak's, a new one catching
		# up on its history, one whose retention was trimmed
		my @pids = $kind eq 'kill_consumer' ? $self->pids_of_source(undef, 'ad_events') : $self->pids_of_source('shop');
		return undef unless @pids;
		$self->release_stops;
		my $pid = pick(\@pids);
		kill 'KILL', $pid or return undef;
		return "pid $pid";
	}
	if ($kind eq 'kill_publisher')
	{
		my @pubs = $self->pids_of_publishers;
		return undef unless @pubs;
		$self->release_stops;
		my $p = pick(\@pubs);
		kill 'KILL', $p->[1] or return undef;
		return "sink $p->[0] pid $p->[1]";
	}
	if ($kind eq 'kill_postmaster')
	{
		return undef unless AdstreamSoak::server_alive($node);
		$self->release_stops;
		my $pm = $node->{_pid};
		my @kids = AdstreamSoak::children_of($pm);
		my $t = time();
		$node->kill9;
		# Orphaned children keep the shared memory until they notice, and
		# every one of them must notice.  One that does not keeps the server
		# from starting; it is recorded as a failure, then killed.
		usleep(100_000) while time() < $t + 20 && grep { kill 0, $_ } @kids;
		my @orphans = grep { kill 0, $_ } @kids;
		my $orphans = '';
		if (@orphans)
		{
			my @what = map { "pid $_ (" . proc_title($_) . ')' } @orphans;
			$orphans = "; still running 20 s after the postmaster died: @what, killed";
			push @{ $self->{anomalies} }, sprintf('t=%.1fs after kill -9 of the postmaster, %s kept running'
				  . ' (its server could not restart: "pre-existing shared memory block is still in use")',
				$t - $self->{t0}, join(', ', @what));
			kill 'KILL', @orphans;
			usleep(100_000) while grep { kill 0, $_ } @orphans;
		}
		AdstreamSoak::start_node($node);
		return sprintf('postmaster %d (%d children), restarted after %.1f s%s', $pm, scalar @kids,
			time() - $t, $orphans);
	}
	if ($kind eq 'immediate_stop')
	{
		return undef unless AdstreamSoak::server_alive($node);
		$self->release_stops;
		my $t = time();
		$node->stop('immediate');
		AdstreamSoak::start_node($node);
		return sprintf('stop -m immediate and start, %.1f s', time() - $t);
	}
	if ($kind eq 'sigstop')
	{
		my %stopped = map { $_ => 1 } ($self->{stopped_pids} ? $self->{stopped_pids}->() : ());
		my @targets = grep { !$stopped{ $_->[1] } } ((map { [ 'consumer', $_ ] } $self->pids_of_source(undef, 'ad_events')),
			(map { [ 'orders', $_ ] } $self->pids_of_source('shop')),
			(map { [ "publisher $_->[0]", $_->[1] ] } $self->pids_of_publishers));
		return undef unless @targets;
		my $t = pick(\@targets);
		kill 'STOP', $t->[1] or return undef;
		my $secs = 1 + rand(7);
		$self->{active}{sigstop} = { until => time() + $secs, pid => $t->[1] };
		return sprintf('%s pid %d for %.1f s', $t->[0], $t->[1], $secs);
	}
	if ($kind eq 'broker_down')
	{
		my $id = rand() < 0.3 ? 'all' : 1 + int(rand($self->{src_brokers}));
		$self->{src}->cmd("down $id");
		my $secs = 2 + rand(8);
		$self->{active}{broker_down} = { until => time() + $secs, id => $id };
		return sprintf('source broker %s for %.1f s', $id, $secs);
	}
	if ($kind eq 'leader_change')
	{
		my ($topic, $parts) = @{ pick($self->{src_topics}) };
		my $p = int(rand($parts));
		my $b = 1 + int(rand($self->{src_brokers}));
		$self->{src}->cmd("leader $topic $p $b");
		return "source $topic/$p to broker $b";
	}
	if ($ERRORS{$kind})
	{
		my ($api, $codes, $min, $max) = @{ $ERRORS{$kind} };
		my $n = $min + int(rand($max - $min + 1));
		my @c = map { pick($codes) } 1 .. $n;
		my ($where, $broker);
		if ($kind eq 'fetch_errors')
		{
			($where, $broker) = ('source', $self->{src});
		}
		else
		{
			$where = pick([ sort keys %{ $self->{sinks} } ]);
			$broker = $self->{sinks}{$where};
		}
		$broker->cmd("errors $api $n @c");
		$self->{dirty}{$api}{$where} = $broker;
		return "$where: next $n $api requests fail with @c";
	}
	if ($kind eq 'region_down')
	{
		my $sink = pick([ sort keys %{ $self->{sinks} } ]);
		$self->{sinks}{$sink}->cmd('down all');
		my $secs = 3 + rand(12);
		$self->{active}{region_down} = { until => time() + $secs, sink => $sink };
		return sprintf('sink %s down for %.1f s', $sink, $secs);
	}
	if ($kind eq 'disk_full')
	{
		my $file = "$self->{disk}/filler";
		my $bytes = fill_disk($file);
		my $secs = 2 + rand(6);
		$self->{active}{disk_full} = { until => time() + $secs, file => $file };
		return sprintf('tablespace filesystem filled (%.0f MiB written) for %.1f s', $bytes / 1048576, $secs);
	}
	die "unknown fault kind $kind";
}

# Writes zeros to $file until the filesystem refuses (ENOSPC).
sub fill_disk
{
	my ($file) = @_;
	open my $fh, '>', $file or die "cannot create $file: $!";
	binmode $fh;
	my $chunk = "\0" x 1048576;
	my $bytes = 0;
	while (1)
	{
		my $n = syswrite($fh, $chunk);
		last unless defined $n && $n > 0;
		$bytes += $n;
	}
	# and the last few blocks, byte-granular enough for a page of 8 KiB
	my $small = "\0" x 4096;
	while (1)
	{
		my $n = syswrite($fh, $small);
		last unless defined $n && $n > 0;
		$bytes += $n;
	}
	close $fh;
	return $bytes;
}

sub heal
{
	my ($self, $kind) = @_;
	my $a = delete $self->{active}{$kind} or return;
	if ($kind eq 'sigstop')
	{
		kill 'CONT', $a->{pid};
		$self->log("heal sigstop: SIGCONT pid $a->{pid}");
	}
	elsif ($kind eq 'broker_down')
	{
		$self->{src}->cmd("up $a->{id}");
		$self->log("heal broker_down: source broker $a->{id} up");
	}
	elsif ($kind eq 'region_down')
	{
		$self->{sinks}{ $a->{sink} }->cmd('up all');
		$self->log("heal region_down: sink $a->{sink} up");
	}
	elsif ($kind eq 'disk_full')
	{
		unlink $a->{file} or die "cannot remove $a->{file}: $!";
		$self->log('heal disk_full: filler removed');
	}
}

# Ends every fault and leaves the server running; pending injected Kafka
# errors are dropped.
sub heal_all
{
	my ($self) = @_;
	$self->heal($_) for sort keys %{ $self->{active} };
	for my $api (sort keys %{ $self->{dirty} // {} })
	{
		$_->cmd("clear $api") for values %{ $self->{dirty}{$api} };
	}
	$self->{dirty} = {};
	if (!AdstreamSoak::server_alive($self->{node}))
	{
		$self->log('the server was not running; starting it');
		$self->{node}->{_pid} = undef;
		AdstreamSoak::start_node($self->{node});
	}
}

sub summary
{
	my ($self) = @_;
	my $total = 0;
	$total += $_ for values %{ $self->{count} };
	return ($total, join(' ', map { "$_=$self->{count}{$_}" } grep { $self->{count}{$_} } @KINDS));
}

# ---------------------------------------------------------------------------
# Operator actions: what an operator (or maintenance, or an upstream
# producer) does to a running installation, at random moments like the
# faults, checked exactly like them.  Issue #11: each of these lost events
# or double counted on 0.4 in some way.
# ---------------------------------------------------------------------------
package AdstreamSoak::Actions;

use strict;
use warnings;
use File::Temp ();
use IPC::Run ();
use Time::HiRes qw(time usleep);

our @KINDS = qw(expire drop_expired replay pause stall workers timezone xid_burn new_source trim);

# Relative frequency of the actions started at random moments.  The long
# stall and the long pause of the round (see begin_round) come on top.
my %WEIGHT = (expire => 6, drop_expired => 3, replay => 3, pause => 1.5, stall => 0.5, workers => 1,
	timezone => 1, xid_burn => 1, new_source => 1, trim => 1);

my @ZONES = ('Europe/Berlin', 'America/New_York', 'UTC', 'Australia/Sydney', 'Asia/Kathmandu', 'Pacific/Chatham');

sub new
{
	my ($class, %o) = @_;
	# node, src (the source cluster), trim_broker, truth, log, t0, seed,
	# horizon_s, speed (event seconds per second of the main load), long,
	# gap_min, gap_max, parts
	my $self = bless {
		%o,
		rng => AdstreamSoak::Rng->new($o{seed}),
		count => { map { $_ => 0 } @KINDS },
		skipped => {},
		failed => {},
		active => {},           # id => { kind, until, ... } for actions that last
		jobs => [],             # background processes
		serial => 0,
		expiry_calls => 0,
		zone => 'UTC',
		workers => 2,
		next_at => time() + 1 + rand(2),
		round => {},
		expired_seen => '',
		replayed => 0,
		hist_events => 0,
	}, $class;
	$self->{dir} = PostgreSQL::Test::Utils::tempdir();
	# drop_source(forget_counts) where this version has it
	$self->{forget_counts} = $o{node}->safe_psql('postgres',
		q{SELECT count(*) FROM pg_proc WHERE proname = 'drop_source' AND pronamespace = 'adstream'::regnamespace AND pronargs = 2}) ? 1 : 0;
	return $self;
}

sub log
{
	my ($self, $msg) = @_;
	$self->{log}->(sprintf('t=%7.1fs %s', time() - $self->{t0}, $msg));
}

sub sql
{
	my ($self, $sql) = @_;
	my $err;
	my $out = AdstreamSoak::try_sql($self->{node}, $sql, \$err);
	$self->{last_error} = defined $out ? '' : ($err // '') =~ s/\s+/ /gr;
	return $out;
}

sub up { return AdstreamSoak::server_alive($_[0]->{node}) }

# Keeps a background process; $done is called with it once it has exited.
sub background
{
	my ($self, $what, $cmd, $done) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start($cmd, '>', \$out, '2>', \$err);
	push @{ $self->{jobs} }, { what => $what, h => $h, out => \$out, err => \$err, done => $done };
}

sub poll_jobs
{
	my ($self) = @_;
	my @left;
	for my $j (@{ $self->{jobs} })
	{
		if ($j->{h}->pumpable)
		{
			$j->{h}->pump_nb;
			push @left, $j;
			next;
		}
		$j->{h}->finish;
		$j->{ok} = $j->{h}->result == 0;
		$j->{done}->($j);
	}
	$self->{jobs} = \@left;
}

# The source's consumers (pids), from shared memory
sub pids_of
{
	my ($self, $source) = @_;
	my $out = $self->sql(qq{SELECT w.pid FROM adstream.worker_status() w
  JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = '$source' AND w.pid IS NOT NULL ORDER BY 1}) // '';
	return grep { /^\d+$/ } split /\n/, $out;
}

sub consumed
{
	my ($self, $source) = @_;
	my $n = $self->sql("SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets WHERE source = '$source'");
	return defined $n ? $n + 0 : -1;
}

# pids this module keeps stopped (the fault injector leaves them alone)
sub stopped_pids { my ($self) = @_; return map { $_->{pid} } grep { $_->{kind} eq 'stall' } values %{ $self->{active} } }
sub stalled { return scalar $_[0]->stopped_pids }
sub long_stall { return grep { $_->{kind} eq 'stall' && $_->{long} } values %{ $_[0]->{active} } }

# Sends SIGCONT to the stalled worker (before a kill, or when the time is up).
sub release_stops
{
	my ($self) = @_;
	$self->heal($_) for grep { $self->{active}{$_}{kind} eq 'stall' } sort keys %{ $self->{active} };
}

# A new round: its load, where its event time lies, and the long action it
# begins with (chosen by the seed): one worker stalled, or the source
# paused, for longer than the dedup horizon in event time.
sub begin_round
{
	my ($self, %r) = @_;
	$self->{round} = { %r, new_sources => 0, trims => 0 };
	# In a round that gives an hour up, before it does so (crossing: the
	# fraction of the round at which it does).
	return unless $r{crossing};
	my $u = $self->{rng}->rand;
	my $long = $u < 0.4 ? 'stall' : $u < 0.75 ? 'pause' : undef;
	if ($long)
	{
		$self->{round}{long} = $long;
		$self->{round}{long_at} = time() + 0.5 + $self->{rng}->rand(0.6 * $r{crossing} * $r{secs});
	}
}

# Seconds of wall clock that are longer than the horizon in the event time
# of the main load.
sub beyond_horizon
{
	my ($self) = @_;
	return $self->{horizon_s} / $self->{speed} + 3 + $self->{rng}->rand(17);
}

# Called often while a load runs: moves background work on, ends actions
# whose time is up, and starts a new one when its random moment has come.
sub tick
{
	my ($self) = @_;
	$self->poll_jobs;
	$self->step_sources;
	my $now = time();
	for my $id (sort keys %{ $self->{active} })
	{
		my $a = $self->{active}{$id};
		$self->heal($id) if defined $a->{until} && $a->{until} <= $now;
	}
	if ($self->{round}{long} && $now >= $self->{round}{long_at})
	{
		my $kind = delete $self->{round}{long};
		$self->run($kind, long => 1);
	}
	return if $now < $self->{next_at};
	$self->{next_at} = $now + $self->{gap_min} + $self->{rng}->rand($self->{gap_max} - $self->{gap_min});
	my $total = 0;
	$total += $WEIGHT{$_} for @KINDS;
	my $x = $self->{rng}->rand($total);
	for my $kind (@KINDS)
	{
		$x -= $WEIGHT{$kind};
		next if $x >= 0;
		$self->run($kind);
		last;
	}
}

sub run
{
	my ($self, $kind, %o) = @_;
	my $what = $self->start($kind, %o);
	if (!defined $what)
	{
		$self->{skipped}{$kind}++;
	}
	elsif ($what =~ /^failed/)
	{
		$self->{failed}{$kind}++;
		$self->log("ACTION $kind $what");
	}
	else
	{
		$self->{count}{$kind}++;
		$self->log("ACTION $kind $what");
	}
}

# How far each ad-events source has given up its dedup state, for the log
sub expiry_marks
{
	my ($self) = @_;
	my $m = $self->sql(q{SELECT string_agg(name || ' before ' || CASE WHEN isfinite(dedup_expired_before)
	    THEN to_char(dedup_expired_before AT TIME ZONE 'UTC', 'DD HH24:MI') ELSE '-inf' END, ', ' ORDER BY id)
	  FROM adstream.sources WHERE kind = 'ad_events'});
	chomp $m if defined $m;
	return $m // '?';
}

# Runs expiry now.  Returns a description, or 'failed ...'.
sub expire
{
	my ($self, $sql) = @_;
	$sql //= 'SELECT adstream.expire_dedup_state()';
	$self->{expiry_calls}++;
	my $out = $self->sql($sql);
	return "failed ($self->{last_error})" unless defined $out;
	chomp $out;
	my $marks = $self->expiry_marks;
	my $changed = $marks ne $self->{expired_seen};
	$self->{expired_seen} = $marks;
	return "$out dropped" . ($changed ? "; state given up: $marks" : '');
}

# Expiry in a loop, in the background, every few hundredths of a second
# (each call its own transaction) until $done_sql holds or $secs passed.
sub expiry_loop
{
	my ($self, $what, $done_sql, $secs, $pause) = @_;
	$pause //= 0.05;
	my $sql = qq{DO \$\$
DECLARE n integer := 0; t timestamptz := clock_timestamp() + interval '$secs s';
BEGIN
	WHILE clock_timestamp() < t AND NOT ($done_sql) LOOP
		BEGIN
			PERFORM adstream.expire_dedup_state();
			n := n + 1;
		EXCEPTION WHEN lock_not_available THEN NULL;
		END;
		COMMIT;
		PERFORM pg_sleep(0.001 + random() * $pause);
	END LOOP;
	RAISE NOTICE 'expiry ran % times', n;
END \$\$;};
	my $loop = { kind => 'expiry_loop' };
	$self->{active}{"expiry_loop $what"} = $loop;
	$self->background("expiry loop: $what",
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $self->{node}->connstr('postgres'), '-c', $sql ],
		sub {
			my ($j) = @_;
			delete $self->{active}{"expiry loop $what"};
			my ($n) = ${ $j->{err} } =~ /expiry ran (\d+) times/;
			$self->{expiry_calls} += $n // 0;
			$loop->{done} = 1;
			$loop->{ran} = $n;
			my $marks = $self->expiry_marks;
			$self->{expired_seen} = $marks;
			$self->log("expiry loop ($what): " . (defined $n ? "ran $n times" : 'interrupted') . "; state given up: $marks");
		});
	return $loop;
}

sub start
{
	my ($self, $kind, %o) = @_;
	my $rng = $self->{rng};
	my $node = $self->{node};
	return undef unless $self->up;
	if ($kind eq 'expire')
	{
		return $self->expire;
	}
	if ($kind eq 'drop_expired')
	{
		return $self->expire('SELECT adstream.drop_expired_partitions()');
	}
	if ($kind eq 'timezone')
	{
		my $zone = $rng->pick([ grep { $_ ne $self->{zone} } @ZONES ]);
		defined $self->sql("ALTER SYSTEM SET timezone = '$zone'; SELECT pg_reload_conf();")
		  or return "failed ($self->{last_error})";
		$self->{zone} = $zone;
		return "ALTER SYSTEM SET timezone = '$zone', reloaded";
	}
	if ($kind eq 'workers')
	{
		my $n = $rng->pick([ grep { $_ != $self->{workers} } 1 .. 4 ]);
		defined $self->sql(qq{SELECT adstream.alter_source('ads', '{"workers": $n}')})
		  or return "failed ($self->{last_error})";
		my $was = $self->{workers};
		$self->{workers} = $n;
		return "source ads: workers $was -> $n (offsets kept)";
	}
	if ($kind eq 'pause')
	{
		my $source = $o{long} ? 'ads' : $rng->rand < 0.7 ? 'ads' : 'shop';
		return undef if $self->{active}{"pause $source"};
		my $secs = $o{long} ? $self->beyond_horizon : 2 + $rng->rand(8);
		defined $self->sql("SELECT adstream.pause_source('$source')") or return "failed ($self->{last_error})";
		$self->{active}{"pause $source"} = { kind => 'pause', source => $source, until => time() + $secs };
		return sprintf('source %s paused for %.1f s%s', $source, $secs,
			$o{long} ? sprintf(' (%.0f s of its event time, horizon %d s)', $secs * $self->{speed}, $self->{horizon_s}) : '');
	}
	if ($kind eq 'stall')
	{
		return undef if $self->stalled || $self->{faults}{active}{disk_full} || $self->{active}{'pause ads'};
		my %faulted = map { $_ => 1 } grep { defined } ($self->{faults}{active}{sigstop} // {})->{pid};
		my @pids = grep { !$faulted{$_} } $self->pids_of('ads');
		return undef unless @pids >= 2;    # one stalled while the others run
		my $pid = $rng->pick(\@pids);
		my $secs = $o{long} ? $self->beyond_horizon : 2 + $rng->rand(8);
		kill 'STOP', $pid or return undef;
		$self->{active}{stall} = { kind => 'stall', pid => $pid, until => time() + $secs, long => $o{long},
			expire_after => $rng->rand < 0.5 };
		return sprintf('SIGSTOP of one of %d consumers of ads, pid %d, for %.1f s (%.0f s of event time; horizon %d s)',
			scalar @pids, $pid, $secs, $secs * $self->{speed}, $self->{horizon_s});
	}
	if ($kind eq 'replay')
	{
		return $self->start_replay;
	}
	if ($kind eq 'xid_burn')
	{
		return undef if grep { $_->{kind} eq 'xid_burn' } values %{ $self->{active} };
		return $self->start_xid_burn;
	}
	if ($kind eq 'new_source')
	{
		return undef if $self->{round}{new_sources} >= ($self->{long} ? 2 : 1)
		  || grep { $_->{kind} eq 'new_source' && $_->{state} ne 'caught_up' } values %{ $self->{active} };
		return $self->start_new_source;
	}
	if ($kind eq 'trim')
	{
		return undef if !$self->{trim_broker} || $self->{round}{trims} >= 1;
		return $self->start_trim;
	}
	die "unknown action $kind";
}

sub heal
{
	my ($self, $id) = @_;
	my $a = $self->{active}{$id} or return;
	if ($a->{kind} eq 'stall')
	{
		delete $self->{active}{$id};
		# Half the time expiry runs in a loop as the worker wakes up, while
		# it may still show the positions it had when it stopped.
		if ($a->{expire_after} && $self->up)
		{
			$self->expiry_loop("stall of pid $a->{pid} ended", 'false', 3);
			usleep(50_000);
		}
		kill 'CONT', $a->{pid};
		$self->log("heal stall: SIGCONT pid $a->{pid}" . ($a->{expire_after} ? ', expiry in a loop for 3 s' : ''));
	}
	elsif ($a->{kind} eq 'pause')
	{
		if (!$self->up || !defined $self->sql("SELECT adstream.resume_source('$a->{source}')"))
		{
			$a->{until} = time() + 0.5;    # the server is away: again soon
			return;
		}
		delete $self->{active}{$id};
		$self->log("heal pause: source $a->{source} resumed");
	}
}

# Everything back: stalls and pauses end, background work completes, new
# sources exist and their retention trims are done.  The server is running.
sub heal_all
{
	my ($self) = @_;
	$self->release_stops;
	my $deadline = time() + 600;
	while (1)
	{
		$self->heal($_) for sort grep { $self->{active}{$_}{kind} eq 'pause' } keys %{ $self->{active} };
		$self->poll_jobs;
		$self->step_sources(finishing => 1);
		last unless @{ $self->{jobs} } || grep { $_->{kind} =~ /^(pause|xid_burn)$/
			  || ($_->{kind} =~ /^(new_source|trim)$/ && $_->{state} !~ /^(catchup|caught_up|resumed)$/) }
		  values %{ $self->{active} };
		die 'operator actions did not complete within 600 s: ' . join(', ', map { "$_->{kind}" } values %{ $self->{active} })
		  if time() > $deadline;
		usleep(100_000);
	}
	delete $self->{round}{long};
}

# The sources created for this round (new sources over history, retention
# trims): checked at the round's end, then paused or dropped (an enabled
# source behind the main one holds the ad-events watermark, and so the
# attribution of every order, back).
sub round_sources
{
	my ($self) = @_;
	return map { $_->{source} } grep { $_->{kind} =~ /^(new_source|trim)$/ } values %{ $self->{active} };
}

sub retire_round_sources
{
	my ($self) = @_;
	for my $id (sort grep { $self->{active}{$_}{kind} =~ /^(new_source|trim)$/ } keys %{ $self->{active} })
	{
		my $a = delete $self->{active}{$id};
		my $s = $self->{truth}->source($a->{source});
		my $u = $self->{rng}->rand;
		if ($u < 0.5)
		{
			$self->{node}->safe_psql('postgres', "SELECT adstream.pause_source('$a->{source}')");
			$s->{state} = 'paused';
			$self->log("source $a->{source} paused after its check");
		}
		elsif ($u < 0.75 || !$self->{forget_counts})
		{
			$self->{node}->safe_psql('postgres', "SELECT adstream.drop_source('$a->{source}')");
			$s->{state} = 'dropped';
			$self->log("source $a->{source} dropped after its check; its counts stay");
		}
		else
		{
			# What it counted goes too: from the minutes, the rollups and
			# the sinks (published as zeros where nothing is left).
			$self->{node}->safe_psql('postgres', "SELECT adstream.drop_source('$a->{source}', forget_counts => true)");
			$s->{state} = 'dropped';
			$s->{forgotten} = 1;
			$self->{hist_events} += $s->{sent};    # published again, as zeros
			$self->log("source $a->{source} dropped after its check, forgetting its counts");
		}
	}
}

# --------------------------------------------------------------------------
# An upstream replay: valid events sent to the soak's source again, from the
# load of this round so far or of the one before.  Each copy is a duplicate
# while its hour's dedup state is kept, a too_late dead letter once it is
# given up, and never counted again.
# --------------------------------------------------------------------------
sub start_replay
{
	my ($self) = @_;
	my $rng = $self->{rng};
	# Mostly the round before (its hour is given up as this one passes the
	# next), else this round so far, or the tick before.
	my ($cur, $prev, $tick) = ($self->{round}{dump}, @{ $self->{round}{dumps} // [] });
	my $u = $rng->rand;
	my $file = $u < 0.6 && defined $prev ? $prev : $u < 0.7 && defined $tick ? $tick : $cur;
	return undef unless defined $file && -s $file;
	my $recs = AdstreamSoak::read_dump($file);
	return undef unless @$recs > 100;
	my $n = int(($self->{long} ? 200 : 100) + $rng->rand($self->{long} ? 2800 : 1400));
	$n = @$recs if $n > @$recs;
	# Replays stay under a tenth of what the topic was sent (the mock
	# broker's 5 MiB per partition).
	my $ads = $self->{truth}->source('ads');
	my $room = int(($ads->{sent} + $self->{round}{sent_est}) / 10) - $self->{replayed};
	$n = $room if $n > $room;
	return undef if $n < 50;
	my $from = $rng->int(@$recs - $n + 1);
	# Valid events only (the parser's verdict, clock checks aside, and not
	# in the future): their fate is then only duplicate or too_late.
	my @cand = grep { defined $_->[2] && length $_->[2] < 2000 && defined AdstreamSoak::event_id_of($_->[2]) }
	  @$recs[ $from .. $from + $n - 1 ];
	return undef unless @cand;
	my $values = join(",\n", map { sprintf("(%d, '\\x%s'::bytea)", $_, unpack('H*', $cand[$_][2])) } 0 .. $#cand);
	my $ok = $self->sql(qq{SELECT i FROM (VALUES $values) v(i, p), adstream.validate_event(p) e
	  WHERE e.reason = 'ok' AND e.ts < now() ORDER BY 1});
	return "failed ($self->{last_error})" unless defined $ok;
	my @pick = map { $cand[$_] } grep { /^\d+$/ } split /\n/, $ok;
	return undef unless @pick;
	$file = sprintf('%s/replay-%d.dump', $self->{dir}, ++$self->{serial});
	AdstreamSoak::write_dump($file, \@pick);
	my @ids = map { AdstreamSoak::event_id_of($_->[2]) } @pick;
	$self->{replayed} += @ids;
	$self->background("replay $file",
		[ "$AdstreamTest::BIN/adstream-loadgen", '--brokers', $self->{src}{bootstrap}, '--topic', 'ads', '--replay', $file ],
		sub {
			my ($j) = @_;
			my ($sent) = ${ $j->{out} } =~ /sent=(\d+)/;
			die "loadgen --replay failed: ${ $j->{err} }" unless $j->{ok} && defined $sent;
			die "replayed $sent of " . scalar(@ids) . ' records' if $sent != @ids;
			$self->{truth}->add_replay('ads', \@ids);
		});
	return sprintf('%d valid events sent to ads again (records %d-%d of the %s)', scalar @pick, $from, $from + $n - 1,
		$u < 0.6 && defined $prev ? 'round before' : $u < 0.7 && defined $tick ? 'tick before' : 'round so far');
}

# --------------------------------------------------------------------------
# Transaction ids burnt in short transactions, then every database frozen
# (template0 too, allowed connections for the time), so that clog can be
# truncated: a dedup index entry whose transaction status were asked after
# that would fail or be misread.
# --------------------------------------------------------------------------
sub clog_oldest
{
	my ($self) = @_;
	my @segs = sort glob($self->{node}->data_dir . '/pg_xact/*');
	return @segs ? $segs[0] =~ s{.*/}{}r : '?';
}

sub start_xid_burn
{
	my ($self) = @_;
	my $rng = $self->{rng};
	my $n = int($self->{long} ? 200_000 + $rng->rand(1_000_000) : 100_000 + $rng->rand(600_000));
	my $dbs = $self->sql('SELECT datname FROM pg_database ORDER BY datname') // return "failed ($self->{last_error})";
	my @dbs = grep { length } split /\n/, $dbs;
	my $node = $self->{node};
	my $script = sprintf("%s/xid-burn-%d.sh", $self->{dir}, ++$self->{serial});
	my $psql = sub { my ($db, $sql) = @_; return "psql -X -q -v ON_ERROR_STOP=1 -d \"" . $node->connstr($db) . "\" -c \"$sql\"" };
	open my $fh, '>', $script or die "cannot write $script: $!";
	print $fh join("\n", 'set -e',
		$psql->('postgres', "DO \\\$\\\$BEGIN FOR i IN 1..$n LOOP PERFORM txid_current(); COMMIT; END LOOP; END\\\$\\\$"),
		$psql->('postgres', 'ALTER DATABASE template0 ALLOW_CONNECTIONS true'),
		(map { $psql->($_, 'VACUUM (FREEZE)') } @dbs),
		$psql->('postgres', 'ALTER DATABASE template0 ALLOW_CONNECTIONS false'), '');
	close $fh;
	my $before = $self->clog_oldest;
	my $t = time();
	$self->{active}{xid_burn} = { kind => 'xid_burn' };
	$self->background('xid_burn', [ 'bash', $script ], sub {
		my ($j) = @_;
		# template0 must not stay open to connections, whatever happened
		my $restored;
		for (1 .. 600)
		{
			last if $restored = $self->up && defined $self->sql('ALTER DATABASE template0 ALLOW_CONNECTIONS false');
			usleep(200_000);
		}
		die "cannot close template0 again: $self->{last_error}" unless $restored;
		delete $self->{active}{xid_burn};
		my $err = ${ $j->{err} } =~ s/\s+/ /gr;
		$self->log(sprintf('xid_burn: %s after %.1f s; oldest clog segment %s -> %s%s', $j->{ok} ? 'done' : 'interrupted',
			time() - $t, $before, $self->clog_oldest, $j->{ok} ? '' : " ($err)"));
	});
	return sprintf('%d transaction ids burnt, then VACUUM (FREEZE) of %s; oldest clog segment %s', $n, join(', ', @dbs), $before);
}

# --------------------------------------------------------------------------
# A new source over hours of existing history: a fresh topic filled by the
# load generator with hours of event time (far more per message than the
# main load), then create_source.  While it catches up, expiry runs every
# few tenths of a second: it must give up the new source's hours only
# behind its slowest unread partition.
# --------------------------------------------------------------------------
sub start_new_source
{
	my ($self) = @_;
	my $rng = $self->{rng};
	my $r = $self->{round};
	my $name = sprintf('hist%d', ++$self->{serial});
	my $parts = 2 + $rng->int(3);
	my $workers = 1 + $rng->int(2);
	my $hours = $self->{long} ? 2 + $rng->rand(4) : 2 + $rng->rand(2);
	# Nearly every event of a history is an (ad, minute) of its own, so one
	# record more for the sinks, whose partitions keep 5 MiB like the
	# sources' (and as many again when its counts are forgotten): the
	# histories of a soak stay within a third of the main load.
	my $count = int($parts * (1000 + $rng->rand(3000)));
	my $room = $self->{hist_budget} - $self->{hist_events};
	$count = $room if $count > $room;
	return undef if $count < 1000;
	$self->{hist_events} += $count;
	# Before the round's event time, by more than the attribution window and
	# the 600 s by which an order may precede its user's first click: its
	# clicks cannot be credited to this round's orders, and while it is
	# enabled it holds the ad-events watermark (and the round's orders) back,
	# never forward.  It ends one to six minutes past an hour: once it is
	# read, expiry gives the hour before up, while the last batches still
	# carry its last minutes.
	my $hour_ms = int(($r->{start_ms} - 1_400_000) / 3_600_000) * 3_600_000;
	my $end_ms = $hour_ms + int((60 + $rng->rand(300)) * 1000);
	my $span = int($hours * 3600);
	$self->{src}->cmd("topic $name $parts");
	$self->{truth}->add_source($name, topic => $name, broker => $self->{src}, kind => 'ad_events', scope => 'round');
	my $dump = "$self->{dir}/$name.dump";
	my $run = AdstreamTest::loadgen($self->{src}, topic => $name, count => $count, seed => $self->{seed} * 1000 + 700 + $self->{serial},
		start_ms => $end_ms - $span * 1000, background => 1,
		args => [ '--span-s', $span, '--late-ratio', 0, '--horizon-s', $self->{horizon_s}, '--dump', $dump ]);
	my $a = $self->{active}{$name} = { kind => 'new_source', source => $name, state => 'prefill', workers => $workers };
	$r->{new_sources}++;
	push @{ $self->{jobs} }, { what => "prefill $name", h => $run->{handle}, out => $run->{out}, err => $run->{err},
		done => sub {
			my ($j) = @_;
			AdstreamTest::finish_loadgen($run);
			$self->{truth}->add_truth_file($run->{truth}, events => $name);
			$self->{truth}->add_dump($name, $dump);
			$a->{sent} = $run->{sent};
			$a->{state} = 'create';
		} };
	return sprintf('topic %s: %d partitions filled with %d events over %.1f h of event time ending at %s;'
		  . ' create_source with %d worker(s) once filled', $name, $parts, $count, $hours,
		AdstreamSoak::utc($end_ms), $workers);
}

# Moves new sources and retention trims on, one step at a time.
sub step_sources
{
	my ($self, %o) = @_;
	my $now = time();
	for my $id (sort keys %{ $self->{active} })
	{
		my $a = $self->{active}{$id};
		if ($a->{kind} eq 'new_source')
		{
			if ($a->{state} eq 'create' && $self->up)
			{
				# Expiry in a loop from before the workers start until the
				# source has caught up on its history: it may give up only
				# what lies behind the slowest partition that still has
				# messages to read.
				$a->{loop} = $self->expiry_loop("$a->{source} catching up",
					"(SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets WHERE source = '$a->{source}') >= $a->{sent}", 60, 0.01)
				  unless $a->{loop} && !$a->{loop}{done};
				my $opts = qq({"workers": $a->{workers}});
				next unless defined $self->sql("SELECT adstream.create_source('$a->{source}', '$self->{src}{bootstrap}', '$a->{source}', options => '$opts')");
				$a->{state} = 'catchup';
				$self->log("source $a->{source} created over its history ($a->{sent} messages)");
			}
			elsif ($a->{state} eq 'catchup' && (!$a->{loop} || $a->{loop}{done}))
			{
				# (again, if a crash ended the loop)
				if ($self->consumed($a->{source}) >= $a->{sent})
				{
					$a->{state} = 'caught_up';
					$self->log("source $a->{source} caught up");
				}
				elsif ($self->up && !$o{finishing})
				{
					$a->{loop} = $self->expiry_loop("$a->{source} catching up",
						"(SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets WHERE source = '$a->{source}') >= $a->{sent}", 60, 0.01);
				}
			}
		}
		elsif ($a->{kind} eq 'trim')
		{
			$self->step_trim($a);
		}
	}
}

# --------------------------------------------------------------------------
# A retention trim of unread messages: a source (on a cluster of its own,
# one partition) reads a few events, is paused, and its topic is filled
# with more than the mock broker keeps (5 MiB per partition), so that the
# broker trims what the source has not read.  On resume the gap must be
# recorded in adstream.offset_gaps exactly as the broker trimmed it, and
# what the broker still had counted exactly.
# --------------------------------------------------------------------------
my $TRIM_FIRST = 20;          # read before the pause
my $TRIM_FILL = 130;          # ~7.8 MB of 60 kB events: more than 5 MiB
my $TRIM_PAD = 60_000;

sub trim_event
{
	my ($self, $a, $i) = @_;
	my $rng = $self->{rng};
	my $ad = 1 + $rng->int(1000);
	my $ts = $a->{t0_ms} + $i * 1000;
	my $json = sprintf('{"event_id":"%s","type":"impression","ad_id":%d,"campaign_id":%d,"user_id":%d,"store_id":%d,"ts":%d',
		$rng->uuid, $ad, 1 + $ad % 50, 1 + $rng->int(2000), 1 + $rng->int(50), $ts);
	$json .= ',"pad":"' . ('x' x $TRIM_PAD) . '"' if $i >= $TRIM_FIRST;
	push @{ $a->{events} }, [ $ad, 1 + $ad % 50, int($ts / 60000) * 60 ];
	return [ 0, "$ad", $json . '}' ];
}

sub start_trim
{
	my ($self) = @_;
	my $name = sprintf('trim%d', ++$self->{serial});
	my $a = $self->{active}{$name} = { kind => 'trim', source => $name, state => 'first', events => [],
		t0_ms => $self->{round}{start_ms} - int((500 + $self->{rng}->rand(300)) * 1000) };
	$self->{round}{trims}++;
	$self->{trim_broker}->cmd("topic $name 1");
	$self->{truth}->add_source($name, topic => $name, broker => $self->{trim_broker}, kind => 'ad_events', scope => 'round');
	my $file = "$self->{dir}/$name-first.dump";
	AdstreamSoak::write_dump($file, [ map { $self->trim_event($a, $_) } 0 .. $TRIM_FIRST - 1 ]);
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$AdstreamTest::BIN/adstream-loadgen", '--brokers', $self->{trim_broker}{bootstrap}, '--topic', $name,
		'--replay', $file ], '>', \$out, '2>', \$err)
	  or die "loadgen --replay failed: $err";
	die "trim: sent $out, not $TRIM_FIRST" unless $out =~ /sent=$TRIM_FIRST\b/;
	return "source $name: $TRIM_FIRST events, then paused and its partition filled past what the broker keeps";
}

sub step_trim
{
	my ($self, $a) = @_;
	return unless $self->up;
	my $name = $a->{source};
	if ($a->{state} eq 'first')
	{
		return unless defined $self->sql("SELECT adstream.create_source('$name', '$self->{trim_broker}{bootstrap}', '$name')");
		$a->{state} = 'reading';
	}
	elsif ($a->{state} eq 'reading')
	{
		return unless $self->consumed($name) >= $TRIM_FIRST;
		return unless defined $self->sql("SELECT adstream.pause_source('$name')");
		$a->{state} = 'pausing';
	}
	elsif ($a->{state} eq 'pausing')
	{
		my $pids = $self->sql(qq{SELECT count(*) FROM adstream.worker_status() w JOIN adstream.sources s ON s.id = w.source_id
		  WHERE s.name = '$name' AND w.pid IS NOT NULL});
		return unless defined $pids && $pids == 0;
		$a->{stored} = $self->consumed($name);
		return if $a->{stored} < 0;
		my $file = "$self->{dir}/$name-fill.dump";
		AdstreamSoak::write_dump($file, [ map { $self->trim_event($a, $_) } $TRIM_FIRST .. $TRIM_FIRST + $TRIM_FILL - 1 ]);
		$a->{state} = 'filling';
		$self->background("fill $name",
			[ "$AdstreamTest::BIN/adstream-loadgen", '--brokers', $self->{trim_broker}{bootstrap}, '--topic', $name, '--replay', $file ],
			sub {
				my ($j) = @_;
				my ($sent) = ${ $j->{out} } =~ /sent=(\d+)/;
				die "loadgen --replay failed: ${ $j->{err} }" unless $j->{ok} && defined $sent && $sent == $TRIM_FILL;
				$a->{state} = 'filled';
			});
	}
	elsif ($a->{state} eq 'filled')
	{
		my ($low, $high) = @{ AdstreamTest::topic_watermarks($self->{trim_broker}, $name)->{0} };
		my $total = $TRIM_FIRST + $TRIM_FILL;
		die "trim: topic $name ends at $high, not $total" if $high != $total;
		die "trim: the broker kept everything after offset $a->{stored} (from $low): nothing unread was trimmed"
		  if $low <= $a->{stored};
		# What counts: what was read before the pause and what the broker
		# still has; the rest is the gap.
		my %min;
		$min{ join(',', @{ $a->{events}[$_] }) }++ for (0 .. $a->{stored} - 1, $low .. $total - 1);
		my $file = "$self->{dir}/$name-truth.csv";
		open my $fh, '>', $file or die "cannot write $file: $!";
		print $fh "minute,$_,$min{$_},0\n" for sort keys %min;
		my $counted = $a->{stored} + $total - $low;
		print $fh "total,sent,$counted\ntotal,valid,$counted\ntotal,unique,$counted\ntotal,duplicates,0\n"
		  . "total,rejected,0\ntotal,gap," . ($low - $a->{stored}) . "\n";
		close $fh;
		$self->{truth}->add_truth_file($file, events => $name);
		push @{ $self->{truth}->source($name)->{gaps} }, [ 0, $a->{stored}, $low, 'retention' ];
		$a->{state} = 'trimmed';
		$self->log("trim: source $name read up to $a->{stored}; the broker now holds $low-$high: offsets $a->{stored}-$low trimmed unread");
	}
	elsif ($a->{state} eq 'trimmed')
	{
		return unless defined $self->sql("SELECT adstream.resume_source('$name')");
		$a->{state} = 'resumed';
		$self->log("trim: source $name resumed");
	}
}

sub summary
{
	my ($self) = @_;
	my $total = 0;
	$total += $_ for values %{ $self->{count} };
	return ($total, join(' ', map { "$_=$self->{count}{$_}" } grep { $self->{count}{$_} } @KINDS));
}

package AdstreamSoak;

# ---------------------------------------------------------------------------
# The exact check
# ---------------------------------------------------------------------------
package AdstreamSoak;

# Reads a topic with the upsert reader; returns (file, stderr text).
sub read_upsert
{
	my ($broker, $topic, $dir) = @_;
	my $file = "$dir/$topic.jsonl";
	my $err = '';
	IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $broker->{bootstrap},
		'--topic', $topic, '--timeout-s', 120 ], '>', $file, '2>', \$err)
	  or die "upsert reader failed on $topic: $err";
	return ($file, $err);
}

# How many partitions of a topic the mock broker has trimmed (the load was
# sized wrong and nothing could be checked exactly), and how many messages
# the topic holds.
sub trimmed_partitions
{
	my ($broker, $topic) = @_;
	my ($n, $total) = (0, 0);
	for my $w (values %{ AdstreamTest::topic_watermarks($broker, $topic) })
	{
		$n++ if $w->[0] > 0;
		$total += $w->[1];
	}
	return ($n, $total);
}

# An ad's minute as readers see it: summed over the sources that counted it
# (ad_stats_minute has a row per source where it keeps the source).
our $MINUTES = q{
SET timezone = 'UTC';
CREATE TEMP VIEW got_min AS
  SELECT ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM adstream.ad_stats_minute GROUP BY ad_id, window_start;
};

sub utc
{
	my ($ms) = @_;
	return 'none' unless defined $ms && length $ms;
	my @t = gmtime(int($ms / 1000));
	return sprintf('%04d-%02d-%02d %02d:%02d:%02d.%03d UTC', $t[5] + 1900, $t[4] + 1, @t[ 3, 2, 1, 0 ], $ms % 1000);
}

# Everything the event sources must hold, against the ground truth of every
# load so far (AdstreamSoak::Truth), and records TAP results:
#   - per source, the counters in adstream.offsets: messages read (what its
#     topic holds, the mock broker's double writes included, and the gaps),
#     accepted (exactly the distinct events), duplicates + rejected;
#   - per source and reason, the dead letters.  A too_late dead letter is
#     legitimate only for a copy of an event that was sent more than once
#     (a duplicate of a counted event) and whose time is before its source's
#     dedup_expired_before; each one is proven so.  Other reasons: exactly
#     the truth, or more by no more than the copies the mock broker stored
#     twice;
#   - every offset gap recorded, against the trims the broker really made;
#   - every (ad, minute) count, exactly.
# Returns { failures => [ "what: first diverging key ..." ], ... }.
sub check_events
{
	my (%o) = @_;
	my ($node, $truth, $what) = @o{qw(node truth what)};
	my @fail;
	my $q = sub { return $node->safe_psql('postgres', $_[0]) };

	my %got;
	for (split /\n/, $q->(q{SELECT source, sum(next_offset), sum(accepted), sum(duplicates), sum(rejected)
	  FROM adstream.offsets GROUP BY 1}))
	{
		my ($s, @v) = split /\|/;
		$got{$s} = \@v;
	}
	my %dl;
	for (split /\n/, $q->(q{SELECT source, reason, count(*) FROM adstream.rejected_events GROUP BY 1, 2}))
	{
		my ($s, $r, $n) = split /\|/;
		$dl{$s}{$r} = $n;
	}
	my %late;
	for (split /\n/, $q->(q{SELECT r.source, r.partition, r."offset", coalesce(v.reason, 'null'), v.event_id,
	       (extract(epoch FROM v.ts) * 1000)::bigint,
	       CASE WHEN isfinite(s.dedup_expired_before) THEN (extract(epoch FROM s.dedup_expired_before) * 1000)::bigint END,
	       (extract(epoch FROM now() - current_setting('adstream.minute_retention')::interval) * 1000)::bigint
	  FROM adstream.rejected_events r JOIN adstream.sources s ON s.name = r.source
	  LEFT JOIN LATERAL adstream.validate_event(r.payload) v ON true
	 WHERE r.reason = 'too_late' ORDER BY 1, 2, 3}))
	{
		my ($s, @v) = split /\|/, $_, -1;
		push @{ $late{$s} }, \@v;
	}

	my ($rejected, $too_late) = (0, 0);
	for my $s ($truth->sources)
	{
		my $name = $s->{name};
		my $extra = $s->{extra};
		my %want = %{ $s->{rejects} };
		$rejected += $_ for values %want;
		if ($s->{state} ne 'dropped')
		{
			my $g = $got{$name} // [ 0, 0, 0, 0 ];
			my @want = ($s->{sent} + $s->{gap} + $extra, $s->{unique}, $s->{duplicates} + $s->{rejected} + $extra);
			my @have = ($g->[0], $g->[1], $g->[2] + $g->[3]);
			my $ok = "@want" eq "@have";
			ok($ok, "$what: counters of source $name");
			push @fail, "counters of source $name: first diverging key: source=$name (messages read, accepted,"
			  . " duplicates + rejected) expected=(@{[ join(', ', @want) ]}) got=(@{[ join(', ', @have) ]})"
			  . ($extra ? " (the mock broker stored $extra writes twice)" : '') unless $ok;
			my $letters = 0;
			$letters += $_ for values %{ $dl{$name} // {} };
			ok($g->[3] == $letters, "$what: source $name: one dead letter per rejected message");
			push @fail, "dead letters of source $name: first diverging key: source=$name rejected=$g->[3] dead letters=$letters"
			  if $g->[3] != $letters;

			# Each too_late dead letter: a re-sent copy of a counted event, of
			# an hour its source had given up.  A copy the mock broker stored
			# twice was sent once more than the dumps say: as many letters
			# beyond the copies sent as it stored twice are let pass.
			my (%per_id, @bad, @beyond);
			for my $l (@{ $late{$name} // [] })
			{
				my ($part, $off, $reason, $id, $ts, $expired, $retained) = @$l;
				my $key = "source=$name partition=$part offset=$off";
				if ($reason ne 'ok')
				{
					push @bad, "$key: its message is not a valid event ($reason)";
				}
				elsif (!(length($expired) && $ts < $expired) && $ts >= $retained)
				{
					push @bad, "$key event_id=$id ts=" . utc($ts) . ": its hour was not given up (source $name"
					  . ' dedup_expired_before=' . utc($expired) . ')';
				}
				elsif (++$per_id{$id} > ($s->{copies}{$id} // 0) - 1)
				{
					push @beyond, "$key event_id=$id ts=" . utc($ts) . ': a too_late dead letter of an event sent '
					  . ($s->{copies}{$id} // 0) . ' time(s), not a re-sent copy of a counted one';
				}
			}
			my $n_late = @{ $late{$name} // [] };
			my $want_late = $want{too_late} // 0;
			push @bad, @beyond if @beyond > $extra + $want_late;
			ok(!@bad, "$what: source $name: every too_late dead letter ($n_late) is a re-sent copy, of an hour given up");
			push @fail, "too_late dead letters of source $name: " . scalar(@bad) . " not proven; first diverging key: $bad[0]"
			  if @bad;
			$s->{too_late} = $n_late > $want_late ? $n_late - $want_late : 0;
		}
		$too_late += $s->{too_late};

		# Dead letters per reason.  too_late: the truth's and those proven
		# above.  The others: the truth, or more by the copies the mock
		# broker stored twice, no more.
		my %have = %{ $dl{$name} // {} };
		$want{too_late} = ($want{too_late} // 0) + $s->{too_late};
		delete $want{too_late} unless $want{too_late} || $have{too_late};
		my (@hard, @diff);
		my $excess = 0;
		for my $reason (sort { $a cmp $b } keys %{ { %want, %have } })
		{
			my ($w, $h) = ($want{$reason} // 0, $have{$reason} // 0);
			next if $w == $h;
			push @diff, "source=$name reason=$reason expected=$w got=$h";
			push @hard, $diff[-1] if $h < $w || $reason eq 'too_late';
			$excess += $h - $w if $h > $w;
		}
		my $ok = !@hard && $excess <= $extra;
		ok($ok, "$what: dead letters of source $name by reason");
		push @fail, 'rejections by source and reason: ' . scalar(@diff) . ' keys differ; first diverging key: '
		  . ($hard[0] // $diff[0]) . ($extra ? " (the mock broker stored $extra writes twice)" : '')
		  unless $ok;
	}

	# Offset gaps: exactly the trims the broker made of what was not read.
	my $want_gaps = join("\n", map { my $s = $_; map { join('|', $s->{name}, @$_) } @{ $s->{gaps} } }
		sort { $a->{name} cmp $b->{name} } $truth->sources);
	my $got_gaps = $q->(q{SELECT source, partition, from_offset, to_offset, reason FROM adstream.offset_gaps ORDER BY source, id});
	ok($got_gaps eq $want_gaps, "$what: offset gaps are exactly what the broker trimmed unread");
	if ($got_gaps ne $want_gaps)
	{
		my @w = split /\n/, $want_gaps;
		my @g = split /\n/, $got_gaps;
		my $i = 0;
		$i++ while $i < @w && $i < @g && $w[$i] eq $g[$i];
		push @fail, "offset gaps (source|partition|from|to|reason): first diverging key: row " . ($i + 1)
		  . ' expected=' . ($w[$i] // 'no row') . ' got=' . ($g[$i] // 'no row');
	}

	my $prelude = AdstreamTest::truth_sql($truth->files) . $MINUTES;
	my ($rows) = $q->($prelude . 'SELECT count(*) FROM truth_min');
	ok($rows > 0, "$what: truth has $rows (ad, minute) rows");
	my $res = $q->($prelude . q{
SELECT count(*) OVER (), 'ad_id=' || coalesce(t.ad_id, g.ad_id) || ' window_start=' || coalesce(t.window_start, g.window_start),
       'expected (campaign, impressions, clicks)=' || coalesce((t.campaign_id, t.impressions, t.clicks)::text, 'no row'),
       'got=' || coalesce((g.campaign_id, g.impressions, g.clicks)::text, 'no row'),
       coalesce(t.ad_id, g.ad_id), extract(epoch FROM coalesce(t.window_start, g.window_start))::bigint
  FROM truth_min t FULL JOIN got_min g ON g.ad_id = t.ad_id AND g.window_start = t.window_start
 WHERE (t.campaign_id, t.impressions, t.clicks) IS DISTINCT FROM (g.campaign_id, g.impressions::numeric, g.clicks::numeric)
 ORDER BY coalesce(t.window_start, g.window_start), coalesce(t.ad_id, g.ad_id) LIMIT 1});
	ok($res eq '', "$what: per-(ad, minute) counts equal the ground truth");
	if ($res ne '')
	{
		my ($n, $key, $want, $got, $ad, $minute) = split /\|/, $res;
		# What became of that minute's events that were not counted
		my $why = $q->(qq{SELECT count(*) || ' too_late dead letters in that minute' || coalesce(': ' || string_agg(r.source
		      || ' partition ' || r.partition || ' offset ' || r."offset" || ' event_id ' || v.event_id, ', '), '')
		  FROM adstream.rejected_events r, adstream.validate_event(r.payload) v
		 WHERE r.reason = 'too_late' AND v.ad_id = $ad AND v.ts >= to_timestamp($minute) AND v.ts < to_timestamp($minute + 60)});
		push @fail, "per-(ad, minute) counts: $n keys differ; first diverging key: $key $want $got ($why)";
	}
	return { failures => \@fail, minute_rows => $rows, rejected => $rejected, too_late => $too_late };
}

# Orders, their attribution, attributed_orders, and each sink's topics read
# back with Pinot's upsert rule, against the truth and the database.
sub check_orders_sinks
{
	my (%o) = @_;
	my ($node, $truth, $sinks, $what) = @o{qw(node truth sinks what)};
	my @fail;
	my $prelude = AdstreamTest::truth_sql($truth->files) . q{
CREATE TEMP VIEW want_orders AS TABLE truth_orders;
CREATE TEMP VIEW got_orders AS
  SELECT order_id, ad_id, campaign_id, event_id, (extract(epoch FROM event_ts) * 1000)::bigint AS event_ms,
         (extract(epoch FROM ts) * 1000)::bigint AS order_ms, amount, currency
    FROM adstream.orders WHERE source = 'shop';
};
	# Each comparison: a FULL JOIN on the key; the first differing key (in
	# key order) is reported with both sides, plus the number of such keys.
	my @cmp = (
		[ 'orders and their attribution',
		  q{SELECT count(*) OVER (), 'order_id=' || coalesce(w.order_id, g.order_id),
		           'expected=' || coalesce((w.ad_id, w.event_id, w.event_ms, w.order_ms, w.amount, w.currency)::text, 'no order'),
		           'got=' || coalesce((g.ad_id, g.event_id, g.event_ms, g.order_ms, g.amount, g.currency)::text, 'no order')
		      FROM want_orders w FULL JOIN got_orders g USING (order_id)
		     WHERE (w.ad_id, w.campaign_id, w.event_id, w.event_ms, w.order_ms, w.amount, w.currency)
		           IS DISTINCT FROM (g.ad_id, g.campaign_id, g.event_id, g.event_ms, g.order_ms, g.amount, g.currency::text)
		     ORDER BY coalesce(w.order_ms, g.order_ms), 2 LIMIT 1} ],
		[ 'attributed_orders',
		  q{SELECT count(*) OVER (), 'order_id=' || coalesce(w.order_id, a.order_id),
		           'expected=' || coalesce((w.ad_id, w.event_id, w.amount, adstream.record_uuid('attributed_orders', w.order_id::text))::text, 'no row'),
		           'got=' || coalesce((a.ad_id, a.click_event_id, a.amount, a.record_uuid)::text, 'no row')
		      FROM (SELECT * FROM want_orders WHERE event_id IS NOT NULL) w FULL JOIN adstream.attributed_orders a USING (order_id)
		     WHERE (w.ad_id, w.event_id, w.amount, adstream.record_uuid('attributed_orders', w.order_id::text))
		           IS DISTINCT FROM (a.ad_id, a.click_event_id, a.amount, a.record_uuid)
		     ORDER BY 2 LIMIT 1} ],
	);
	my ($orders, $credited) = split /\|/, $node->safe_psql('postgres', $prelude . q{
SELECT (SELECT count(*) FROM want_orders), (SELECT count(*) FROM want_orders WHERE event_id IS NOT NULL)});
	ok($credited > 0, "$what: truth has $orders orders ($credited credited)");
	for my $c (@cmp)
	{
		my ($name, $sql) = @$c;
		my $res = $node->safe_psql('postgres', $prelude . $sql);
		my ($n, $key, $want, $got) = split /\|/, $res;
		ok($res eq '', "$what: $name equal the ground truth");
		push @fail, "$name: $n keys differ; first diverging key: $key $want $got" if $res ne '';
	}

	# What each sink's Pinot tables would hold, against the database.
	my $dir = PostgreSQL::Test::Utils::tempdir();
	for my $sink (sort keys %$sinks)
	{
		my ($stats_file, $e1) = read_upsert($sinks->{$sink}, 'adstream.ad_stats', $dir);
		my ($orders_file, $e2) = read_upsert($sinks->{$sink}, 'adstream.attributed_orders', $dir);
		my $trimmed = join('', grep { /trimmed/ } split /^/m, $e1 . $e2);
		ok($trimmed eq '', "$what: sink $sink: nothing trimmed from its topics");
		push @fail, "sink $sink: the mock broker trimmed records (size the soak down): $trimmed" if $trimmed ne '';
		my $pre = $MINUTES . qq{
CREATE TEMP TABLE stats_raw (j jsonb);
CREATE TEMP TABLE orders_raw (j jsonb);
COPY stats_raw FROM '$stats_file' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
COPY orders_raw FROM '$orders_file' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
};
		my @pc = (
			[ "sink $sink: Pinot's upsert view of adstream.ad_stats",
			  q{SELECT count(*) OVER (), 'ad_id=' || coalesce(p.ad_id, d.ad_id) || ' window_start_ms=' || coalesce(p.ws, d.ws),
			           'database=' || coalesce((d.node, d.campaign_id, d.impressions, d.clicks, d.record_uuid)::text, 'no row'),
			           'pinot=' || coalesce((p.node, p.campaign_id, p.impressions, p.clicks, p.record_uuid)::text, 'no row')
			      FROM (SELECT j->>'node' AS node, (j->>'ad_id')::bigint AS ad_id, (j->>'campaign_id')::bigint AS campaign_id,
			                   (j->>'window_start')::bigint AS ws, (j->>'impressions')::bigint AS impressions,
			                   (j->>'clicks')::bigint AS clicks, (j->>'record_uuid')::uuid AS record_uuid FROM stats_raw
			             -- an (ad, minute) whose every count was forgotten
			             -- (drop_source(forget_counts)) is published as zeros
			             WHERE (j->>'impressions')::bigint <> 0 OR (j->>'clicks')::bigint <> 0 OR j->>'campaign_id' IS NOT NULL) p
			      FULL JOIN (SELECT current_setting('adstream.node_name') AS node, ad_id, campaign_id,
			                        (extract(epoch FROM window_start) * 1000)::bigint AS ws, impressions, clicks,
			                        adstream.record_uuid('ad_stats', current_setting('adstream.node_name') || '|' || ad_id || '|'
			                                             || (extract(epoch FROM window_start) * 1000)::bigint) AS record_uuid
			                   FROM got_min) d ON d.ad_id = p.ad_id AND d.ws = p.ws AND d.node = p.node
			     WHERE (p.node, p.campaign_id, p.impressions, p.clicks, p.record_uuid)
			           IS DISTINCT FROM (d.node, d.campaign_id, d.impressions, d.clicks, d.record_uuid)
			     ORDER BY coalesce(p.ws, d.ws), coalesce(p.ad_id, d.ad_id) LIMIT 1} ],
			[ "sink $sink: Pinot's upsert view of adstream.attributed_orders",
			  q{SELECT count(*) OVER (), 'order_id=' || coalesce(p.order_id, d.order_id),
			           'database=' || coalesce((d.ad_id, d.click_event_id, d.amount, d.currency, d.record_uuid)::text, 'no row'),
			           'pinot=' || coalesce((p.ad_id, p.click_event_id, p.amount, p.currency, p.record_uuid)::text, 'no row')
			      FROM (SELECT (j->>'order_id')::uuid AS order_id, (j->>'ad_id')::bigint AS ad_id,
			                   (j->>'click_event_id')::uuid AS click_event_id, (j->>'amount')::numeric AS amount,
			                   j->>'currency' AS currency, (j->>'record_uuid')::uuid AS record_uuid FROM orders_raw) p
			      FULL JOIN adstream.attributed_orders d USING (order_id)
			     WHERE (p.ad_id, p.click_event_id, p.amount, p.currency, p.record_uuid)
			           IS DISTINCT FROM (d.ad_id, d.click_event_id, d.amount, d.currency, d.record_uuid)
			     ORDER BY 2 LIMIT 1} ],
		);
		for my $c (@pc)
		{
			my ($name, $sql) = @$c;
			my $res = $node->safe_psql('postgres', $pre . $sql);
			my ($n, $key, $want, $got) = split /\|/, $res;
			ok($res eq '', "$what: $name equals the database");
			push @fail, "$name: $n keys differ; first diverging key: $key $want $got" if $res ne '';
		}
	}
	return { failures => \@fail, orders => $orders, credited => $credited };
}

1;
