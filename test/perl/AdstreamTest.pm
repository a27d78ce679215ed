
# AdstreamTest: shared pieces of adstream's end-to-end TAP suites.
#
#   my $broker = AdstreamTest::Broker->start(topics => ['ads:4']);
#   $broker->cmd('down all');
#   my $node = AdstreamTest::node('main');
#   my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 1);
#   AdstreamTest::wait_consumed($node, 'src', $total_sent);
#   AdstreamTest::check_truth($node, [$run->{truth}], 'after crash');

package AdstreamTest;

use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

our $BIN = $ENV{ADSTREAM_BIN} or die "ADSTREAM_BIN is not set (run through make tapcheck)";

# PostgreSQL 15's poll_query_until writes the query to psql's stdin: when the
# server is restarting after a crash (every kill -9 of a worker), psql may
# exit before reading it, and IPC::Run dies of the broken pipe, ending the
# test with exit code 32 (seen in CI after a kill -9).  The same loop, with
# the query given by -c and nothing to write.
{
	no warnings 'redefine';
	*PostgreSQL::Test::Cluster::poll_query_until = sub {
		my ($self, $dbname, $query, $expected) = @_;
		local %ENV = $self->_get_env();
		$expected = 't' unless defined $expected;
		my @cmd = ($self->installed_command('psql'), '-XAt', '-d', $self->connstr($dbname),
			defined $query ? ('-c', $query) : ());
		my ($stdout, $stderr) = ('', '');
		for (my $attempt = 0; $attempt < 10 * $PostgreSQL::Test::Utils::timeout_default; $attempt++)
		{
			($stdout, $stderr) = ('', '');
			eval { IPC::Run::run(\@cmd, '<', '/dev/null', '>', \$stdout, '2>', \$stderr); };
			chomp($stdout);
			chomp($stderr);
			return 1 if $stdout eq $expected && $stderr eq '';
			usleep(100_000);
		}
		diag(sprintf("poll_query_until timed out executing this query:\n%s\nexpecting this output:\n%s\n"
			  . "last actual query output:\n%s\nwith stderr:\n%s",
			$query // '(connection attempt only)', $expected, $stdout, $stderr));
		return 0;
	};
}

# Event-time origin shared by every load of a test, so that later loads are
# never too late relative to earlier ones.
our $START_MS = int(time() * 1000) - 30 * 60 * 1000;

# How many times larger the deployment tests' loads are: 1 in make test,
# DEPLOY_SCALE (10 by default) in make deploycheck, their longer variants.
our $SCALE = $ENV{ADSTREAM_TEST_SCALE} // 1;
sub scaled { my ($n) = @_; return int($n * $SCALE); }

# The topics a Pinot upsert table consumes, as the mock broker creates them:
# more partitions for larger loads, since the mock keeps at most 5 MiB of a
# partition and trims the rest (the reader must find every record).
sub pinot_topics
{
	return [ 'adstream.ad_stats:' . 4 * $SCALE, 'adstream.attributed_orders:' . 2 * $SCALE ];
}

# A server with adstream preloaded; its workers run in database postgres.
# Automatic maintenance is off unless asked for.
# create_extension => 0 leaves the database empty (for pg_restore);
# allows_streaming => 1 makes it a primary that standbys can follow.
sub node
{
	my ($name, %conf) = @_;
	my $create = delete $conf{create_extension} // 1;
	my $streaming = delete $conf{allows_streaming} // 0;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $streaming);
	my %settings = (
		shared_preload_libraries => "'adstream'",
		'adstream.database' => "'postgres'",
		'adstream.max_message_bytes' => 65536,
		'adstream.batch_max_ms' => 100,
		max_worker_processes => 32,
		restart_after_crash => 'on',
		# Tests whose truth has old events (--late-ratio) must not have hours
		# given up behind their back; 185_maintenance turns it on.
		'adstream.auto_maintenance' => 'off',
		# The default (200 M ids, about 840 MB of shared memory) is for
		# production; tests remember far fewer.
		'adstream.dedup_index_size' => 4000000,
		%conf);
	$node->append_conf('postgresql.conf',
		join('', map { "$_ = $settings{$_}\n" } sort keys %settings));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION adstream') if $create;
	return $node;
}

# Runs the load generator to completion and returns its summary and truth file.
sub loadgen
{
	my ($broker, %o) = @_;
	my $truth = PostgreSQL::Test::Utils::tempdir() . "/truth-$o{topic}-$o{seed}.csv";
	my @cmd = ("$BIN/adstream-loadgen", '--brokers', $broker->{bootstrap},
		'--topic', $o{topic}, '--count', $o{count}, '--seed', $o{seed},
		'--start-ms', $o{start_ms} // $START_MS, '--max-bytes', 65536, '--truth', $truth,
		@{ $o{args} // [] });
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	my %run = (handle => $h, truth => $truth, out => \$out, err => \$err);
	return \%run if $o{background};
	finish_loadgen(\%run);
	return \%run;
}

sub finish_loadgen
{
	my ($run) = @_;
	$run->{handle}->finish;
	die "loadgen failed: ${ $run->{err} }" if $run->{handle}->result != 0;
	my ($sent) = ${ $run->{out} } =~ /sent=(\d+)/ or die "no loadgen summary: ${ $run->{out} }";
	$run->{sent} = $sent;
	return $run;
}

# SQL: none of the source's events waits in adstream.set_aside (true on
# versions without it).
sub none_set_aside
{
	my ($node, $source) = @_;
	return 'true'
	  if $node->safe_psql('postgres', q{SELECT to_regclass('adstream.set_aside') IS NULL}) eq 't';
	return "NOT EXISTS (SELECT 1 FROM adstream.set_aside a JOIN adstream.sources s ON s.id = a.source_id "
	  . "WHERE s.name = '$source')";
}

# What the dedup tests compare: dedup_index_status() as a hash, the ids
# logged in dedup_log, the events accepted (offsets) and counted (minutes).
sub dedup_status
{
	my ($node) = @_;
	my @cols = qw(entries hot_entries filter_entries segments moved_to_filter disk_lookups disk_duplicates ready);
	my @v = split /\|/, $node->safe_psql('postgres', 'SELECT ' . join(', ', @cols) . ' FROM adstream.dedup_index_status()');
	my %s;
	@s{@cols} = @v;
	return \%s;
}

sub logged_ids
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT coalesce(sum(length(ids) / 16), 0) FROM adstream.dedup_log');
}

sub accepted_events
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT coalesce(sum(accepted), 0) FROM adstream.offsets');
}

sub counted_events
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT coalesce(sum(impressions + clicks), 0) FROM adstream.ad_stats_minute');
}

# Per partition [low, high] of a topic: the first offset the broker still
# holds and its end.
sub topic_watermarks
{
	my ($broker, $topic) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$BIN/adstream-upsert-reader", '--brokers', $broker->{bootstrap},
		'--topic', $topic, '--watermarks' ], '>', \$out, '2>', \$err)
	  or die "cannot read the watermarks of $topic: $err";
	my %w;
	for (split /\n/, $out)
	{
		my ($p, $low, $high) = split / /;
		$w{$p} = [ $low, $high ];
	}
	return \%w;
}

# The copies the broker stored of retried writes, as "TOPIC PARTITION OFFSET"
# strings: the mock broker may store a retried write of the idempotent load
# generator twice when it goes down mid-stream (the soak meets the same).
# The load must have been sent with --seq-headers, which names each send, so
# that a copy is told apart from a duplicate sent on purpose; the topic must
# hold exactly $sent messages and these copies.
sub broker_copies
{
	my ($broker, $topic, $sent) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$BIN/adstream-upsert-reader", '--brokers', $broker->{bootstrap},
		'--topic', $topic, '--copies' ], '>', \$out, '2>', \$err)
	  or die "cannot read the copies in $topic: $err";
	die "topic $topic was trimmed: $err" if $err =~ /trimmed/;
	my ($held) = $err =~ /^read=(\d+) /m or die "adstream-upsert-reader --copies: no summary in: $err";
	my @copies = map { "$topic $_" } split /\n/, $out;
	die "topic $topic holds $held messages, not the $sent sent and " . scalar(@copies) . ' copies'
	  if $held != $sent + @copies;
	return \@copies;
}

# Waits until the source's committed offsets cover $total messages, and
# every event it set aside has been judged again.
sub wait_consumed
{
	my ($node, $source, $total) = @_;
	my $judged = none_set_aside($node, $source);
	$node->poll_query_until('postgres',
		"SELECT coalesce(sum(next_offset), 0) >= $total AND $judged FROM adstream.offsets WHERE source = '$source'")
	  or die "source $source did not consume $total messages: "
	  . $node->safe_psql('postgres', 'SELECT * FROM adstream.source_status');
}

# Several nodes that split a source's topic: wait until, summed over them, it
# has consumed $total messages.
sub wait_consumed_over
{
	my ($nodes, $source, $total) = @_;
	my $consumed = sub {
		my $sum = 0;
		for my $node (@$nodes)
		{
			my $judged = none_set_aside($node, $source);
			# (a node with events set aside has not consumed them yet)
			$sum += $node->safe_psql('postgres',
				"SELECT CASE WHEN $judged THEN coalesce(sum(next_offset), 0) ELSE -1 END "
				  . "FROM adstream.offsets WHERE source = '$source'");
		}
		return $sum;
	};
	for (1 .. 1200)
	{
		return 1 if $consumed->() >= $total;
		select(undef, undef, undef, 0.1);
	}
	die "the nodes' sources $source did not consume $total messages: " . $consumed->();
}

# SQL that loads truth files into truth_raw (one line each), sums their
# per-(ad, minute) lines into the view truth_min and lists their orders in
# the view truth_orders.
sub truth_sql
{
	my ($truths) = @_;
	my $load = join('', map { "COPY truth_raw FROM '$_';\n" } @$truths);
	return qq{
CREATE TEMP TABLE truth_raw (line text);
$load
CREATE TEMP VIEW truth_min AS
  SELECT split_part(line, ',', 2)::bigint AS ad_id, split_part(line, ',', 3)::bigint AS campaign_id,
         to_timestamp(split_part(line, ',', 4)::bigint) AS window_start,
         sum(split_part(line, ',', 5)::bigint) AS impressions, sum(split_part(line, ',', 6)::bigint) AS clicks
    FROM truth_raw WHERE line LIKE 'minute,%' GROUP BY 1, 2, 3;
CREATE TEMP VIEW truth_orders AS
  SELECT split_part(line, ',', 2)::uuid AS order_id, nullif(split_part(line, ',', 3), '')::bigint AS ad_id,
         nullif(split_part(line, ',', 4), '')::bigint AS campaign_id, nullif(split_part(line, ',', 5), '')::uuid AS event_id,
         nullif(split_part(line, ',', 6), '')::bigint AS event_ms, split_part(line, ',', 7)::bigint AS order_ms,
         split_part(line, ',', 8)::numeric AS amount, split_part(line, ',', 9) AS currency
    FROM truth_raw WHERE line LIKE 'order,%';
};
}

# Compares aggregates, dead letters and counters with the generators' truth.
# copies => [ "TOPIC PARTITION OFFSET", ... ] (broker_copies): messages the broker
# stored twice; a dead letter at one of those offsets is then not counted,
# since the truth has its message once.
sub check_truth
{
	my ($node, $truths, $what, %o) = @_;
	# dead letters and counters of the event sources only (orders have their own)
	my $events = $o{source} ? "source = '$o{source}'" : 'true';
	my @copies = @{ $o{copies} // [] };
	my $copy = !@copies ? 'false'
	  : '(r.topic, r.partition, r."offset") IN ('
	  . join(', ', map { my ($t, $p, $off) = split / /; "('$t', $p, $off)" } @copies) . ')';
	my $prelude = truth_sql($truths) . qq{
CREATE TEMP VIEW truth_rej AS
  SELECT split_part(line, ',', 2) AS reason, sum(split_part(line, ',', 3)::bigint) AS n
    FROM truth_raw WHERE line LIKE 'reject,%' GROUP BY 1;
CREATE TEMP VIEW got_min AS	-- summed over the sources that counted each minute
  SELECT ad_id, max(campaign_id) AS campaign_id, window_start, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM adstream.ad_stats_minute GROUP BY ad_id, window_start;
CREATE TEMP VIEW dead AS
  SELECT r.*, $copy AS copy FROM adstream.rejected_events r WHERE $events;
CREATE TEMP VIEW got_rej AS
  SELECT reason, count(*)::numeric AS n FROM dead WHERE NOT copy GROUP BY 1;
};
	my $res = $node->safe_psql('postgres', $prelude . qq{
SELECT (SELECT count(*) FROM ((TABLE truth_min EXCEPT TABLE got_min) UNION ALL (TABLE got_min EXCEPT TABLE truth_min)) d),
       (SELECT count(*) FROM ((TABLE truth_rej EXCEPT TABLE got_rej) UNION ALL (TABLE got_rej EXCEPT TABLE truth_rej)) d),
       (SELECT count(*) FROM truth_min),
       (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,unique,%'),
       (SELECT sum(accepted) FROM adstream.offsets WHERE $events),
       (SELECT sum(split_part(line, ',', 3)::bigint) FROM truth_raw WHERE line LIKE 'total,rejected,%'),
       (SELECT count(*) FILTER (WHERE NOT copy) FROM dead),
       (SELECT count(*) FILTER (WHERE copy) FROM dead);
});
	my ($min_diff, $rej_diff, $rows, $unique, $accepted, $rejected, $dead, $copies) = split /\|/, $res;
	if (@copies)
	{
		cmp_ok($copies, '<=', scalar @copies,
			"$what: $copies dead letters are of messages the broker stored twice (" . scalar(@copies) . ' copies)');
	}
	ok($rows > 0, "$what: ground truth has $rows (ad, minute) rows");
	is($min_diff, 0, "$what: every (ad, minute) count equals the ground truth");
	is($rej_diff, 0, "$what: dead letters per reason equal the ground truth");
	is($accepted, $unique, "$what: accepted events ($accepted) equal distinct valid events");
	is($dead, $rejected, "$what: one dead letter per rejected message ($rejected)");
	if ($min_diff != 0 || $rej_diff != 0)
	{
		diag "expected but missing or different:\n" . $node->safe_psql('postgres', $prelude . q{
(TABLE truth_min EXCEPT TABLE got_min) ORDER BY 1, 3 LIMIT 5;
(TABLE truth_rej EXCEPT TABLE got_rej) ORDER BY 1;});
		diag "present but not expected:\n" . $node->safe_psql('postgres', $prelude . q{
(TABLE got_min EXCEPT TABLE truth_min) ORDER BY 1, 3 LIMIT 5;
(TABLE got_rej EXCEPT TABLE truth_rej) ORDER BY 1;});
	}
}

# Compares orders, their attribution and the orders' dead letters with the
# generator's truth (lines "order,..." and "reject_order,...").
sub check_orders
{
	my ($node, $truths, $source, $what) = @_;
	my $prelude = truth_sql($truths) . qq{
CREATE TEMP VIEW want AS TABLE truth_orders;
CREATE TEMP VIEW got AS
  SELECT order_id, ad_id, campaign_id, event_id, (extract(epoch FROM event_ts) * 1000)::bigint AS event_ms,
         (extract(epoch FROM ts) * 1000)::bigint AS order_ms, amount, currency
    FROM adstream.orders WHERE source = '$source';
CREATE TEMP VIEW want_rej AS
  SELECT split_part(line, ',', 2) AS reason, sum(split_part(line, ',', 3)::bigint) AS n
    FROM truth_raw WHERE line LIKE 'reject_order,%' GROUP BY 1;
CREATE TEMP VIEW got_rej AS
  SELECT reason, count(*)::numeric AS n FROM adstream.rejected_events WHERE source = '$source' GROUP BY 1;
};
	my $res = $node->safe_psql('postgres', $prelude . q{
SELECT (SELECT count(*) FROM want), (SELECT count(*) FROM want WHERE event_id IS NOT NULL),
       (SELECT count(*) FROM ((TABLE want EXCEPT TABLE got) UNION ALL (TABLE got EXCEPT TABLE want)) d),
       (SELECT count(*) FROM ((TABLE want_rej EXCEPT TABLE got_rej) UNION ALL (TABLE got_rej EXCEPT TABLE want_rej)) d),
       (SELECT count(*) FROM adstream.attributed_orders a JOIN want w USING (order_id)
         WHERE a.ad_id = w.ad_id AND a.click_event_id = w.event_id AND a.amount = w.amount
           AND a.record_uuid = adstream.record_uuid('attributed_orders', a.order_id::text)),
       (SELECT count(*) FROM adstream.attributed_orders);
});
	my ($orders, $credited, $diff, $rej_diff, $matching, $attributed) = split /\|/, $res;
	ok($credited > 0 && $credited < $orders, "$what: truth has $orders orders, $credited credited");
	is($diff, 0, "$what: every order and its attribution equal the ground truth");
	is($rej_diff, 0, "$what: order dead letters per reason equal the ground truth");
	is($attributed, $credited, "$what: attributed_orders has one row per credited order");
	is($matching, $credited, "$what: attributed_orders rows match, with stable record UUIDs");
	diag $node->safe_psql('postgres', $prelude . q{(TABLE want EXCEPT TABLE got) LIMIT 5; (TABLE got EXCEPT TABLE want) LIMIT 5;})
	  if $diff != 0;
}

# Reads a sink's two topics back with Pinot's upsert rule (latest version per
# key) and compares the result with ad_stats_minute and attributed_orders.
sub check_pinot
{
	my ($node, $broker, $what, %o) = @_;
	my $want_orders = $o{orders} // 1;	# orders => 0: a load without orders
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my %file;
	for my $topic ('adstream.ad_stats', 'adstream.attributed_orders')
	{
		$file{$topic} = "$dir/$topic.jsonl";
		IPC::Run::run([ "$BIN/adstream-upsert-reader", '--brokers', $broker->{bootstrap}, '--topic', $topic ],
			'>', $file{$topic}, '2>', "$dir/$topic.err")
		  or die "upsert reader failed: " . PostgreSQL::Test::Utils::slurp_file("$dir/$topic.err");
	}
	my $res = $node->safe_psql('postgres', qq{
CREATE TEMP TABLE stats_raw (j jsonb);
CREATE TEMP TABLE orders_raw (j jsonb);
COPY stats_raw FROM '$file{'adstream.ad_stats'}' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
COPY orders_raw FROM '$file{'adstream.attributed_orders'}' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
CREATE TEMP VIEW pinot_stats AS
  SELECT j->>'node' AS node, (j->>'ad_id')::bigint AS ad_id, (j->>'campaign_id')::bigint AS campaign_id,
         to_timestamp((j->>'window_start')::bigint / 1000.0) AS window_start,
         (j->>'impressions')::bigint AS impressions, (j->>'clicks')::bigint AS clicks, (j->>'record_uuid')::uuid AS record_uuid
    FROM stats_raw;
CREATE TEMP VIEW db_stats AS	-- a record per (ad, minute): the sum over sources
  SELECT adstream.node_name() AS node, ad_id, max(campaign_id) AS campaign_id, window_start,
         sum(impressions)::bigint AS impressions, sum(clicks)::bigint AS clicks,
         adstream.record_uuid('ad_stats', adstream.node_name() || '|' || ad_id || '|'
                              || (extract(epoch FROM window_start) * 1000)::bigint)
    FROM adstream.ad_stats_minute GROUP BY ad_id, window_start;
CREATE TEMP VIEW pinot_orders AS
  SELECT (j->>'order_id')::uuid AS order_id, (j->>'ad_id')::bigint AS ad_id, (j->>'click_event_id')::uuid AS click_event_id,
         (j->>'amount')::numeric AS amount, j->>'currency' AS currency, (j->>'record_uuid')::uuid AS record_uuid
    FROM orders_raw;
CREATE TEMP VIEW db_orders AS
  SELECT order_id, ad_id, click_event_id, amount, currency, record_uuid FROM adstream.attributed_orders;
SELECT (SELECT count(*) FROM db_stats), (SELECT count(*) FROM db_orders),
       (SELECT count(*) FROM ((TABLE pinot_stats EXCEPT TABLE db_stats) UNION ALL (TABLE db_stats EXCEPT TABLE pinot_stats)) d),
       (SELECT count(*) FROM ((TABLE pinot_orders EXCEPT TABLE db_orders) UNION ALL (TABLE db_orders EXCEPT TABLE pinot_orders)) d);
});
	my ($stats, $orders, $stats_diff, $orders_diff) = split /\|/, $res;
	ok($stats > 0 && ($orders > 0 || !$want_orders), "$what: $stats minute rows and $orders credited orders to compare");
	is($stats_diff, 0, "$what: Pinot's upsert view of adstream.ad_stats equals ad_stats_minute");
	is($orders_diff, 0, "$what: Pinot's upsert view of adstream.attributed_orders equals attributed_orders");
}

# Waits until every sink has published everything committed so far.
sub wait_published
{
	my ($node) = @_;
	$node->poll_query_until('postgres',
		'SELECT count(*) = 0 FROM adstream.sink_status WHERE backlog_rows > 0 OR worker_state <> \'publishing\'')
	  or die 'sinks did not catch up: ' . $node->safe_psql('postgres', 'SELECT * FROM adstream.sink_status');
}

# pids of the running consumer workers of a source
sub worker_pids
{
	my ($node, $source) = @_;
	my $pids = $node->safe_psql('postgres', qq{
SELECT string_agg(w.pid::text, ' ') FROM adstream.worker_status() w
  JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = '$source' AND w.pid IS NOT NULL});
	return grep { /\d/ } split / /, $pids;
}

# Produces hand-made records exactly as given, in order: each record is
# [partition, value, key] with value or key undef for NULL (loadgen --replay).
sub replay
{
	my ($broker, $topic, $records) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . "/replay-$topic.dump";
	open(my $fh, '>:raw', $file) or die "cannot write $file: $!";
	for my $r (@$records)
	{
		my ($p, $v, $k) = @$r;
		print $fh "$p " . (defined $k ? length($k) : -1) . ' ' . (defined $v ? length($v) : -1) . "\n"
		  . ($k // '') . ($v // '') . "\n";
	}
	close($fh) or die "cannot write $file: $!";
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$BIN/adstream-loadgen", '--brokers', $broker->{bootstrap}, '--topic', $topic,
			'--replay', $file ], '>', \$out, '2>', \$err)
	  or die "loadgen --replay failed: $err";
	my ($sent) = $out =~ /sent=(\d+)/ or die "no replay summary: $out";
	die "replayed $sent of " . scalar(@$records) . " records" if $sent != @$records;
	return $sent;
}

package AdstreamTest::Broker;

use strict;
use warnings;
use IPC::Run ();
use Time::HiRes qw(time);

# The embedded broker (test/broker/mock_broker.c) under our control on stdin.
sub start
{
	my ($class, %o) = @_;
	my $self = bless { in => '', out => '', err => '' }, $class;
	my @cmd = ("$AdstreamTest::BIN/adstream-mock-broker", '--brokers', $o{brokers} // 1,
		map { ('--topic', $_) } @{ $o{topics} // [] });
	$self->{h} = IPC::Run::start(\@cmd, '<', \$self->{in}, '>', \$self->{out}, '2>', \$self->{err});
	my $deadline = time() + 30;
	$self->{h}->pump while $self->{out} !~ /^BOOTSTRAP (\S+)/m && time() < $deadline;
	($self->{bootstrap}) = $self->{out} =~ /^BOOTSTRAP (\S+)/m
	  or die "mock broker did not start: $self->{err}";
	$self->{out} = '';
	return $self;
}

# Sends one command and returns its OK/ERR line.
sub cmd
{
	my ($self, $line) = @_;
	$self->{in} .= "$line\n";
	my $deadline = time() + 30;
	$self->{h}->pump while $self->{out} !~ /^(OK|ERR)[^\n]*\n/m && time() < $deadline;
	$self->{out} =~ s/^((?:OK|ERR)[^\n]*)\n//m or die "no answer from broker to '$line'";
	my $answer = $1;
	die "broker: $line: $answer" if $answer =~ /^ERR/;
	return $answer;
}

sub stop
{
	my ($self) = @_;
	$self->{in} .= "quit\n";
	$self->{h}->finish;
}

1;
