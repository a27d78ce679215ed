
# AdstreamSoak: the fault injector and the exact checker of the randomized
# soak (test/t/170_soak.pl, `make soak`).
#
#   my $f = AdstreamSoak::Faults->new(node => $node, src => $broker, sinks => \%sinks,
#                                     disk => $disk, log => \&log);
#   $f->maybe_inject while $load_running;   # at random moments
#   $f->heal_all;                           # everything back up, server running
#   my $bad = AdstreamSoak::check_all($node, \@truths, \%sinks, ...);
#
# Every random choice comes from Perl's rand(), which the driver seeds with
# the soak's seed, so the sequence of fault kinds and targets is reproducible
# (their exact moments depend on the machine's timing).

package AdstreamSoak;

use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# Runs SQL without dying; returns its output, or undef while the server is
# down or recovering.
sub try_sql
{
	my ($node, $sql) = @_;
	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err, on_error_die => 0,
		extra_params => [ '-v', 'ON_ERROR_STOP=1' ]);
	return $rc == 0 ? $out : undef;
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

sub pids_of_source
{
	my ($self, $source) = @_;
	my $out = $self->sql(qq{SELECT w.pid FROM adstream.worker_status() w
  JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = '$source' AND w.pid IS NOT NULL ORDER BY 1}) // '';
	return grep { /^\d+$/ } split /\n/, $out;
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
		next if $kind eq 'disk_full' && grep { /^(sigstop)$/ } keys %{ $self->{active} };
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
		my @pids = $self->pids_of_source($kind eq 'kill_consumer' ? 'ads' : 'shop');
		return undef unless @pids;
		$self->heal('sigstop');
		my $pid = pick(\@pids);
		kill 'KILL', $pid or return undef;
		return "pid $pid";
	}
	if ($kind eq 'kill_publisher')
	{
		my @pubs = $self->pids_of_publishers;
		return undef unless @pubs;
		$self->heal('sigstop');
		my $p = pick(\@pubs);
		kill 'KILL', $p->[1] or return undef;
		return "sink $p->[0] pid $p->[1]";
	}
	if ($kind eq 'kill_postmaster')
	{
		return undef unless AdstreamSoak::server_alive($node);
		$self->heal('sigstop');
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
		$self->heal('sigstop');
		my $t = time();
		$node->stop('immediate');
		AdstreamSoak::start_node($node);
		return sprintf('stop -m immediate and start, %.1f s', time() - $t);
	}
	if ($kind eq 'sigstop')
	{
		my @targets = ((map { [ 'consumer', $_ ] } $self->pids_of_source('ads')),
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
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $broker->{bootstrap},
		'--topic', $topic, '--watermarks' ], '>', \$out, '2>', \$err)
	  or die "cannot read the watermarks of $topic: $err";
	my ($n, $total) = (0, 0);
	for (split /\n/, $out)
	{
		my ($p, $low, $high) = split / /;
		$n++ if $low > 0;
		$total += $high;
	}
	return ($n, $total);
}

# Compares everything with the ground truth of every load so far and with
# each sink's Pinot-upsert reconstruction.  Returns a list of failures, each
# "what: first diverging key ...", and records TAP results.
sub check_all
{
	my (%o) = @_;
	my ($node, $truths, $sinks, $what) = @o{qw(node truths sinks what)};
	my %extra = %{ $o{extra} // {} };    # source => messages in Kafka beyond what was sent
	my ($extra_ads, $extra_shop) = ($extra{ads} // 0, $extra{shop} // 0);
	my @fail;
	my $prelude = AdstreamTest::truth_sql($truths) . qq{
CREATE TEMP VIEW truth_rej AS
  SELECT 'ads' AS source, split_part(line, ',', 2) AS reason, sum(split_part(line, ',', 3)::bigint) AS n
    FROM truth_raw WHERE line LIKE 'reject,%' GROUP BY 2
  UNION ALL
  SELECT 'shop', split_part(line, ',', 2), sum(split_part(line, ',', 3)::bigint)
    FROM truth_raw WHERE line LIKE 'reject_order,%' GROUP BY 2;
CREATE TEMP VIEW want_orders AS TABLE truth_orders;
CREATE TEMP VIEW got_orders AS
  SELECT order_id, ad_id, campaign_id, event_id, (extract(epoch FROM event_ts) * 1000)::bigint AS event_ms,
         (extract(epoch FROM ts) * 1000)::bigint AS order_ms, amount, currency
    FROM adstream.orders WHERE source = 'shop';
};
	# Each comparison: a FULL JOIN on the key; the first differing key (in
	# key order) is reported with both sides, plus the number of such keys.
	my @cmp = (
		[ 'per-(ad, minute) counts',
		  q{SELECT count(*) OVER (), 'ad_id=' || coalesce(t.ad_id, g.ad_id) || ' window_start=' || coalesce(t.window_start, g.window_start),
		           'expected (campaign, impressions, clicks)=' || coalesce((t.campaign_id, t.impressions, t.clicks)::text, 'no row'),
		           'got=' || coalesce((g.campaign_id, g.impressions, g.clicks)::text, 'no row')
		      FROM truth_min t FULL JOIN adstream.ad_stats_minute g ON g.ad_id = t.ad_id AND g.window_start = t.window_start
		     WHERE (t.campaign_id, t.impressions, t.clicks) IS DISTINCT FROM (g.campaign_id, g.impressions::numeric, g.clicks::numeric)
		     ORDER BY coalesce(t.window_start, g.window_start), coalesce(t.ad_id, g.ad_id) LIMIT 1} ],
		# The mock broker can store a retried write of the (idempotent) load
		# generator twice, observed after "down" dropped its connection: Kafka
		# then holds messages beyond those sent (%extra).  A copy of a valid
		# event is one more duplicate; a copy of a bad record (about 1 in 60)
		# is one more dead letter.  So no reason may have fewer dead letters
		# than the truth, and a source's dead letters beyond the truth may not
		# outnumber the copies its topic holds.
		[ 'rejections by source and reason',
		  qq{WITH j AS (
		       SELECT coalesce(t.source, g.source) AS source, coalesce(t.reason, g.reason) AS reason,
		              coalesce(t.n, 0) AS want, coalesce(g.n, 0) AS got
		         FROM truth_rej t FULL JOIN (SELECT source, reason, count(*)::numeric AS n FROM adstream.rejected_events GROUP BY 1, 2) g
		           ON g.source = t.source AND g.reason = t.reason),
		     x AS (SELECT source, sum(got - want) AS excess FROM j GROUP BY source)
		   SELECT count(*) OVER (), 'source=' || j.source || ' reason=' || j.reason, 'expected=' || j.want, 'got=' || j.got
		     FROM j JOIN x USING (source)
		    WHERE j.got < j.want
		       OR (j.got <> j.want AND x.excess > CASE j.source WHEN 'ads' THEN $extra_ads ELSE $extra_shop END)
		    ORDER BY 2 LIMIT 1} ],
		[ 'counters of source ads',
		  qq{SELECT 1, 'offsets of source ads (messages, accepted, duplicates + rejected)', 'expected=' || t, 'got=' || g
		      FROM (SELECT (sum(n) FILTER (WHERE k = 'sent') + $extra_ads, sum(n) FILTER (WHERE k = 'unique'),
		                    sum(n) FILTER (WHERE k IN ('duplicates', 'rejected')) + $extra_ads) t
		              FROM (SELECT split_part(line, ',', 2) k, split_part(line, ',', 3)::numeric n
		                      FROM truth_raw WHERE line LIKE 'total,%') l) tt,
		           (SELECT (sum(next_offset), sum(accepted), sum(duplicates) + sum(rejected))::text g
		              FROM adstream.offsets WHERE source = 'ads') gg
		     WHERE t::text IS DISTINCT FROM g} ],
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
	my $stats = $node->safe_psql('postgres', $prelude . q{
SELECT (SELECT count(*) FROM truth_min), (SELECT count(*) FROM want_orders),
       (SELECT count(*) FROM want_orders WHERE event_id IS NOT NULL),
       (SELECT coalesce(sum(n), 0) FROM truth_rej)});
	my ($rows, $orders, $credited, $rejected) = split /\|/, $stats;
	ok($rows > 0 && $credited > 0, "$what: truth has $rows (ad, minute) rows, $orders orders ($credited credited), $rejected rejections");
	for my $c (@cmp)
	{
		my ($name, $sql) = @$c;
		my $res = $node->safe_psql('postgres', $prelude . $sql);
		my ($n, $key, $want, $got) = split /\|/, $res;
		ok($res eq '', "$what: $name equal the ground truth");
		push @fail, "$name: $n keys differ; first diverging key: $key $want $got"
		  . ($extra_ads + $extra_shop ? " (the mock broker stored $extra_ads event and $extra_shop order writes twice)" : '')
		  if $res ne '';
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
		my $pre = qq{
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
			                   (j->>'clicks')::bigint AS clicks, (j->>'record_uuid')::uuid AS record_uuid FROM stats_raw) p
			      FULL JOIN (SELECT current_setting('adstream.node_name') AS node, ad_id, campaign_id,
			                        (extract(epoch FROM window_start) * 1000)::bigint AS ws, impressions, clicks,
			                        adstream.record_uuid('ad_stats', current_setting('adstream.node_name') || '|' || ad_id || '|'
			                                             || (extract(epoch FROM window_start) * 1000)::bigint) AS record_uuid
			                   FROM adstream.ad_stats_minute) d ON d.ad_id = p.ad_id AND d.ws = p.ws AND d.node = p.node
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
	return { failures => \@fail, minute_rows => $rows, orders => $orders, credited => $credited,
		rejected => $rejected };
}

1;
