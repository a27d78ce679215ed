#!/usr/bin/perl
# Turns bench/measure.sh's results.csv into results.md and the gnuplot PNGs.
#   report.pl META.env RESULTS.csv OUTDIR
use strict;
use warnings;

my ($meta_file, $csv_file, $out) = @ARGV;
die "usage: report.pl META.env RESULTS.csv OUTDIR\n" unless $out;
my $tmp = "$out/tmp";

my %meta;
open(my $mf, '<', $meta_file) or die "$meta_file: $!";
while (<$mf>)
{
	chomp;
	$meta{$1} = $2 if /^(\w+)=(.*)$/;
}
close $mf;

open(my $cf, '<', $csv_file) or die "$csv_file: $!";
chomp(my $header = <$cf>);
my @cols = split /,/, $header;
my (%r, @order);
while (<$cf>)
{
	chomp;
	my @v = split /,/, $_, -1;
	die "$csv_file line $.: " . scalar(@v) . " fields, expected " . scalar(@cols) . "\n" if @v != @cols;
	my %row;
	@row{@cols} = @v;
	$r{ $row{id} } = \%row;
	push @order, $row{id};
}
close $cf;

# Repeated runs (ids ID_r1, ID_r2, ...): ID stands for the run of median
# server CPU per event, exact only if every run was; the description lists
# them all.
my %rounds;
for my $id (@order) { push @{ $rounds{$1} }, $r{$id} if $id =~ /^(.+)_r\d+$/; }
for my $base (sort keys %rounds)
{
	my @runs = @{ $rounds{$base} };
	my @by_cpu = sort { per_m($a, 'server_cpu_s') <=> per_m($b, 'server_cpu_s') } @runs;
	my %m = %{ $by_cpu[ int($#by_cpu / 2) ] };
	my ($inexact) = grep { ($_->{check} // '') !~ /^EXACT/ } @runs;
	$m{check} = $inexact->{check} if $inexact;
	$m{id} = $base;
	$m{description} .= sprintf(' (median of %d runs by server CPU: %s s per million)', scalar @runs,
		join(', ', map { sprintf('%.2f', per_m($_, 'server_cpu_s')) } @runs));
	$r{$base} = \%m;
	push @order, $base;
}

# ---- helpers
sub num { my ($x) = @_; return defined $x && $x ne '' ? $x : undef; }
sub fmt_int
{
	my ($x) = @_;
	return '–' unless defined $x && $x ne '';
	my $s = sprintf('%.0f', $x);
	1 while $s =~ s/^(\d+)(\d{3})/$1,$2/;
	return $s;
}
sub fmt { my ($f, $x) = @_; return defined $x && $x ne '' ? sprintf($f, $x) : '–'; }
# the rate a row is compared by: sustained (10%-90% of the committed offsets) if measured
sub rate { my ($row) = @_; return num($row->{sustained_per_s}) // num($row->{events_per_s}); }
sub per_m { my ($row, $col) = @_; my $v = num($row->{$col}); return defined $v ? $v / $row->{messages} * 1e6 : undef; }
sub per_ev { my ($row, $col) = @_; my $v = num($row->{$col}); return defined $v ? $v / $row->{messages} : undef; }

my @raw = grep { /^raw_/ } @order;
my ($raw_best) = sort { $b <=> $a } map { $r{$_}{sustained_per_s} } @raw;
my ($raw_best_overall) = sort { $b <=> $a } map { $r{$_}{events_per_s} } @raw;
my $alt = $r{alt};
my $alt_rate = $alt ? rate($alt) : undef;
my $copy = $r{copy};
my $copy_rate = $copy ? rate($copy) : undef;
my $e2e = $r{e2e};

sub ratio
{
	my ($x, $y) = @_;
	return '–' unless defined $x && defined $y && $y > 0;
	my $q = $x / $y;
	return $q >= 0.1 ? sprintf('%.2f×', $q) : sprintf('%.1f%%', 100 * $q);
}

my $md = '';
$md .= "# adstream benchmark results\n\n";
$md .= "Produced by `$meta{COMMAND}` ($meta{MODE} mode: $meta{EVENTS} events per data set) on $meta{DATE}, in $meta{DURATION_S} s.\n";
$md .= "Every measurement ran on this machine in this one run, over the same generated messages.\n";
$md .= "The machine may be shared and noisy: compare the ratios rather than the absolute figures.\n\n";
$md .= "| machine | |\n|---|---|\n";
$md .= "| CPUs (nproc) | $meta{NPROC} |\n| CPU model | $meta{CPU} |\n| memory | $meta{MEMORY} |\n";
$md .= "| kernel | $meta{KERNEL} |\n| PostgreSQL | $meta{PG} |\n| librdkafka | $meta{LIBRDKAFKA} |\n";
$md .= "| load average at the end | $meta{LOADAVG} |\n\n";
$md .= "Set-up: one embedded mock broker (`test/bin/adstream-mock-broker`) per data set (a mock broker serves "
  . "fetches more slowly the more it holds), each data set a topic of "
  . "$meta{PARTITIONS} partitions, produced once at the start by `adstream-loadgen` with a fixed seed; about 10% clicks, "
  . "1% malformed, 0.2% late and 0.1% future records. The base data set has 1,000 ads and 10% duplicates, plus "
  . fmt_int($meta{ORDERS}) . " orders in a topic of $meta{ORDER_PARTITIONS} partitions. Each measurement starts a fresh copy of the same "
  . "PostgreSQL cluster (`shared_buffers = 512MB`, `max_wal_size = 8GB`, `checkpoint_timeout = 30min`, everything else "
  . "default, so `synchronous_commit = on`), and every consumer reads its topic from the beginning. adstream runs with "
  . "its defaults (batches of up to 50,000 messages or 100 ms) and $meta{WORKERS} workers unless stated.\n\n";

# ---- the targets of issue #12, each against this run's own measurements
sub pf { my ($ok) = @_; return !defined $ok ? 'not measured' : $ok ? '**PASS**' : '**FAIL**'; }
# a result counts only if it was exact against the truth
sub exact { my @ids = @_; for (@ids) { return 0 unless $r{$_} && ($r{$_}{check} // '') =~ /^EXACT/; } return 1; }
sub pct { my ($x) = @_; return defined $x ? sprintf('%.1f%%', 100 * $x) : '–'; }
{
	my @t;
	my $e2e_rate = $e2e ? rate($e2e) : undef;
	push @t, ["1. ceiling: the raw librdkafka consumer reads above 1 M msg/s",
		defined $raw_best ? sprintf('best of %d: %s msg/s (10–90%%), %s overall; kcat %s msg/s start to exit; %s records per message set',
			scalar(@raw), fmt_int($raw_best), fmt_int($raw_best_overall), $r{kcat} ? fmt_int($r{kcat}{events_per_s}) : '–',
			$meta{RECORDS_PER_SET} || '–') : '–',
		pf(defined $raw_best ? $raw_best > 1e6 : undef)];
	push @t, ["1. adstream against that ceiling (docs: ≥ 25%)",
		sprintf('%s events/s = %s of raw', fmt_int($e2e_rate), ratio($e2e_rate, $raw_best)),
		pf(defined $e2e_rate && defined $raw_best ? $e2e_rate >= 0.25 * $raw_best && exact('e2e') : undef)];
	my ($w1, $w4) = ($r{workers_1}, $r{workers_4});
	my $lock4 = $w4 ? num($w4->{lock_pct}) : undef;
	push @t, ["2. 4 workers: Lock:* below 2% of worker samples",
		defined $lock4 ? sprintf('%s%% at 4 workers (%s%% at 2, %s%% at 1)', $lock4, $e2e->{lock_pct} // '–', $w1 ? $w1->{lock_pct} // '–' : '–') : '–',
		pf(defined $lock4 ? $lock4 < 2 && exact('workers_4') : undef)];
	my ($c1, $c4) = ($w1 ? per_m($w1, 'server_cpu_s') : undef, $w4 ? per_m($w4, 'server_cpu_s') : undef);
	push @t, ["2. 4 workers: server CPU per event within 10% of 1 worker's",
		defined $c1 && defined $c4 ? sprintf('%.2f vs %.2f s per million (%+.0f%%)', $c4, $c1, 100 * ($c4 / $c1 - 1)) : '–',
		pf(defined $c1 && defined $c4 ? $c4 <= 1.10 * $c1 && exact('workers_1', 'workers_4') : undef)];
	my ($s1, $s4) = map { $r{$_} ? per_m($r{$_}, 'server_cpu_s') : undef } qw(workers_1_sized workers_4_sized);
	push @t, ["2. the same, batches closed by size at both (batch_max_ms = 1000: on 2 cores, 4 workers' time-closed batches are half the size)",
		defined $s1 && defined $s4 ? sprintf('%.2f vs %.2f s per million (%+.0f%%)', $s4, $s1, 100 * ($s4 / $s1 - 1)) : '–',
		pf(defined $s1 && defined $s4 ? $s4 <= 1.10 * $s1 && exact('workers_1_sized', 'workers_4_sized') : undef)];
	my $per_id = $meta{DEDUP_CAPACITY} ? $meta{DEDUP_SHM_BYTES} / $meta{DEDUP_CAPACITY} : undef;
	push @t, ["3. dedup index: at most 8 bytes of shared memory per remembered id",
		defined $per_id ? sprintf('%.1f bytes per id at capacity (%s bytes for %s ids; %s held after the growth rounds)',
			$per_id, fmt_int($meta{DEDUP_SHM_BYTES}), fmt_int($meta{DEDUP_CAPACITY}), fmt_int($meta{DEDUP_ENTRIES})) : '–',
		pf(defined $per_id ? $per_id <= 8 : undef)];
	for my $x (['e2e_publish', 0.85, 'with a sink'], ['e2e_attr_publish', 0.6, 'with attribution and a sink'])
	{
		my $row = $r{ $x->[0] };
		my $q = $row && $e2e_rate ? rate($row) / $e2e_rate : undef;
		# with attribution only the overall rate is measured: also against ingestion's overall rate
		my $overall = $row && !num($row->{sustained_per_s}) && num($e2e->{events_per_s})
		  ? sprintf(' (%.2f× of its overall rate, %s events/s)', $row->{events_per_s} / $e2e->{events_per_s}, fmt_int($e2e->{events_per_s})) : '';
		push @t, [sprintf('4. %s: at least %.2f× of ingestion alone', $x->[2], $x->[1]),
			defined $q ? sprintf('%s events/s = %.2f×%s', fmt_int(rate($row)), $q, $overall) : '–', pf(defined $q ? $q >= $x->[1] && exact($x->[0]) : undef)];
	}
	push @t, ["5. at least 3× the strong baseline (COPY, set-based)",
		defined $copy_rate ? sprintf('%s vs %s events/s = %s (the per-event alternative: %s events/s, %s)', fmt_int($e2e_rate),
			fmt_int($copy_rate), ratio($e2e_rate, $copy_rate), fmt_int($alt_rate), ratio($e2e_rate, $alt_rate)) : '–',
		pf(defined $copy_rate && defined $e2e_rate ? $e2e_rate >= 3 * $copy_rate && exact('e2e', 'copy') : undef)];
	for my $id (qw(fresh fresh_default))
	{
		my $f = $r{$id} or next;
		push @t, ["6. p99 produce → visible below 1 s at half the maximum rate, " . ($id eq 'fresh' ? 'fetch.wait.max.ms = 10' : "the product's fetch.wait.max.ms (500 ms)"),
			sprintf('p50 %s ms, p99 %s ms, max %s ms at %s events/s asked (%s reached by the producer); %s', $f->{p50_ms}, $f->{p99_ms},
				$f->{max_ms}, fmt_int($f->{events_per_s}), fmt_int($f->{sustained_per_s}), $f->{check}),
			pf($f->{p99_ms} ne '' ? $f->{p99_ms} < 1000 && exact($id) : undef)];
	}
	$md .= "## The targets of issue #12\n\n";
	$md .= "Each target against this run's own measurements (rates are the sustained 10–90% rates described below). "
	  . "A target passes only if the measurements it rests on were also exact against the ground truth.\n\n";
	$md .= "| target | measured | |\n|---|---|---|\n";
	$md .= join('', map { "| $_->[0] | $_->[1] | $_->[2] |\n" } @t);
	$md .= "\n";
}

# ---- throughput
$md .= "## Throughput\n\n";
$md .= "Events/s is the sustained rate: messages between the moments the committed offsets covered 10% and 90% of the "
  . "data set, polled every 20 ms (the raw consumer: between the moments it had read 10% and 90%, by its own clock). "
  . "Overall includes the start of the workers and the tail.\n\n";
$md .= "| measurement | messages | events/s | overall events/s | / raw | / strong baseline | / per-event alternative | check |\n|---|---:|---:|---:|---:|---:|---:|---|\n";
if (defined $raw_best)
{
	$md .= sprintf("| raw librdkafka consumer, only reads (best of %d: %s) | %s | %s | %s | 1 | %s | %s | all messages read |\n",
		scalar(@raw), join(', ', map { fmt_int($r{$_}{sustained_per_s}) } @raw),
		fmt_int($r{ $raw[0] }{messages}), fmt_int($raw_best), fmt_int($raw_best_overall), ratio($raw_best, $copy_rate),
		ratio($raw_best, $alt_rate));
}
if (my $k = $r{kcat})
{
	$md .= sprintf("| kcat -C -e, the same topic (start to exit, cross-check) | %s | – | %s | – | – | – | all messages read |\n",
		fmt_int($k->{messages}), fmt_int($k->{events_per_s}));
}
for my $id (qw(e2e e2e_publish e2e_attr_publish copy alt))
{
	my $row = $r{$id} or next;
	my $rt = rate($row);
	my $desc = $row->{description};
	$desc .= ' ¹' if $id eq 'e2e_attr_publish';
	$desc .= sprintf(' (all published after %s s)', $row->{drain_s}) if num($row->{drain_s});
	$md .= sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", $desc, fmt_int($row->{messages}),
		fmt_int($rt), fmt_int($row->{events_per_s}), ratio($rt, $raw_best),
		$id eq 'copy' ? '1' : ratio($rt, $copy_rate), $id eq 'alt' ? '1' : ratio($rt, $alt_rate), $row->{check});
}
$md .= "\n¹ With attribution the figure is overall: until every event is counted, every order read and every order the "
  . "events have caught up with judged. Orders later than the last event wait `adstream.attribution_max_wait` "
  . "(set to $meta{ATTR_WAIT_S} s for this run) and are checked against the truth after that.\n\n";
$md .= "The data sets were produced with each partition's records handed to librdkafka 1,000 at a time "
  . "(`adstream-loadgen --batch 1000 --linger-ms 10`): $meta{MESSAGE_SETS} message sets of $meta{RECORDS_PER_SET} records "
  . "on average for the base data set. The raw consumer's rate is between the moments it had read 10% and 90%.\n\n";
$md .= "The strong baseline is `bench/copy_consumer.c`: $meta{WORKERS} processes, the same parser, per poll batch (up to "
  . "50,000 messages or 100 ms) one transaction: COPY of the valid events into a temporary table, one statement that "
  . "inserts the new ids into a seen-ids table ON CONFLICT DO NOTHING RETURNING and upserts the (ad, minute) rows of "
  . "only those, set-based and sorted, COPY of the dead letters, and the partitions' offsets. Checked against the same truth.\n\n";
$md .= "The per-event alternative is `bench/alt_consumer.c`, which is slow, so it reads a smaller data set of the same kind "
  . "(" . fmt_int($r{alt} ? $r{alt}{messages} : undef) . " messages, seed 12): $meta{WORKERS} processes, the same parser, one statement per event "
  . "(a CTE inserting the event id into a seen-ids table ON CONFLICT DO NOTHING RETURNING, feeding the INSERT ... ON CONFLICT "
  . "DO UPDATE of the (ad, minute) row), one transaction per poll batch with its offsets, resuming from its own offsets table. "
  . "Its result is checked against the same truth.\n\n";

# ---- cost
$md .= "## Cost per million events\n\n";
$md .= "CPU seconds from /proc/PID/stat: the adstream workers (and publisher) themselves, and the whole server (postmaster, "
  . "all its processes and the ones it reaped, including the offset poller's connection). For the alternative, client CPU "
  . "is its own processes'. WAL from `pg_current_wal_lsn()`, tables from `pg_total_relation_size` over the schema "
  . "(adstream or alt), both per message. Worker memory is the largest VmHWM / VmRSS of a consumer worker (shared buffers "
  . "it touched included).\n\n";
$md .= "| measurement | worker CPU s/M | server CPU s/M | client CPU s/M | WAL bytes/event | table bytes/event | worker VmHWM MB | worker VmRSS MB |\n";
$md .= "|---|---:|---:|---:|---:|---:|---:|---:|\n";
for my $id (qw(e2e e2e_publish e2e_attr_publish copy alt workers_1 workers_4 workers_1_sized workers_4_sized ads_100k dup_0))
{
	my $row = $r{$id} or next;
	$md .= sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", $row->{description},
		fmt('%.1f', per_m($row, 'worker_cpu_s')), fmt('%.1f', per_m($row, 'server_cpu_s')),
		fmt('%.1f', per_m($row, 'client_cpu_s')), fmt('%.0f', per_ev($row, 'wal_bytes')),
		fmt('%.0f', per_ev($row, 'table_bytes')),
		fmt('%.0f', num($row->{worker_hwm_kb}) ? $row->{worker_hwm_kb} / 1024 : undef),
		fmt('%.0f', num($row->{worker_rss_kb}) ? $row->{worker_rss_kb} / 1024 : undef));
}
$md .= "\n";

# ---- attribution in real time
if ($r{attr_rt_hold} || $r{attr_rt_nohold})
{
	$md .= "## Attribution in real time\n\n";
	$md .= "Ad events and orders produced together in real time (one order per ten events, each order at the clock's time), "
	  . "consumed as they come, with the orders worker holding an order until the ad-events watermark passes it "
	  . "(`adstream.attribution_hold`, the default) or storing it at once (`attribution_hold = 0`). "
	  . "Measured from the first message to every event consumed and every order stored. *As stored*: orders written once, "
	  . "judged, never waiting. *Decided*: `decided_at - ts` over the orders at the clock's time up to the last event's time; "
	  . "its p99 is the end of the stream, where orders beyond the final watermark wait `attribution_max_wait` (5 s here).\n\n";
	$md .= "| orders | events/s asked | events | seconds | server CPU s | orders worker CPU s | WAL MB | judged as stored | decided p50 | decided p99 | check |\n"
	  . "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n";
	for my $id (qw(attr_rt_hold attr_rt_nohold))
	{
		my $g = $r{$id} or next;
		my ($n, $st) = ($g->{waits} =~ /orders=(\d+);judged_as_stored=(\d+)/);
		$md .= sprintf("| %s | %s | %s | %s | %s | %s | %.0f | %s of %s | %s ms | %s ms | %s |\n",
			$id eq 'attr_rt_hold' ? 'held (2 s)' : 'stored at once', fmt_int($g->{events_per_s}), fmt_int($g->{messages}),
			$g->{seconds}, $g->{server_cpu_s}, $g->{worker_cpu_s}, $g->{wal_bytes} / 1e6, fmt_int($st // 0), fmt_int($n // 0),
			$g->{p50_ms}, $g->{p99_ms}, $g->{check});
	}
	$md .= "\n";
}
# ---- freshness
if (my $f = $r{fresh})
{
	$md .= "## Freshness\n\n";
	$md .= sprintf("From produce time (the Kafka message timestamp, CreateTime) to the moment the message's counts are visible in "
		  . "`adstream.ad_stats_minute`, at %s events/s (50%% of the sustained rate measured above), %s messages produced in real time.\n\n",
		fmt_int($f->{events_per_s}), fmt_int($f->{messages}));
	$md .= "| consumer setting | events/s asked | reached by the producer | messages | p50 | p99 | max | check |\n|---|---:|---:|---:|---:|---:|---:|---|\n";
	for my $id (qw(fresh fresh_default))
	{
		my $g = $r{$id} or next;
		$md .= sprintf("| %s | %s | %s | %s | %s ms | %s ms | %s ms | %s |\n",
			$id eq 'fresh' ? '`fetch.wait.max.ms = 10` (the benchmark\'s)' : 'the product\'s own (librdkafka\'s default, 500 ms)',
			fmt_int($g->{events_per_s}), fmt_int($g->{sustained_per_s}), fmt_int($g->{messages}), $g->{p50_ms}, $g->{p99_ms},
			$g->{max_ms}, $g->{check});
	}
	$md .= "\nThe producer (librdkafka, `linger.ms = 20`) runs on the same two cores. When it reaches less than the rate "
	  . "asked, the machine was short of CPU for producer, broker and server together, and the latencies describe that.\n";
	$md .= "\n";
	$md .= "librdkafka's mock broker answers a fetch that finds no new data only when the consumer's `fetch.wait.max.ms` "
	  . "runs out, and does not wake it when data arrives, as a Kafka broker does. With the product's default (500 ms) a "
	  . "worker that has caught up waits up to that long for its next data here; on Kafka it would get the data as it "
	  . "arrives. The second row is this broker's artefact, not adstream's latency; the first is the one to compare "
	  . "with Kafka. Granularity of the second: $meta{FRESH_DEFAULT_NOTE}.\n\n" if $r{fresh_default};
	$md .= "Method: the offsets commit in the same transaction as the aggregates, so a message is visible from the first poll at "
	  . "which its partition's committed `next_offset` exceeds its offset. `bench/offset_poller` records (time, partition, "
	  . "next_offset); the topic is read back for the timestamps, and the two are joined. Granularity: $meta{FRESH_NOTE}. "
	  . "Every message counts, also rejected and duplicate ones. The producer (librdkafka, `linger.ms = 20`) ran on the same machine.\n\n";
	$md .= "If the mean latency by second of production (second plot) keeps rising, the system did not keep up with the rate "
	  . "while the producer ran on the same machine, and the percentiles describe a backlog, not a steady state.\n\n";
	$md .= "![freshness](freshness.png) ![freshness by second](freshness_by_second.png)\n\n";
}

# ---- scaling
$md .= "## Scaling\n\n";
$md .= "Lock waits: the share of `pg_stat_activity` samples of the consumer workers (every 20 ms, while the committed "
  . "offsets went from 10% to 90%) whose `wait_event_type` was `Lock`; the most frequent states follow (CPU: no wait event).\n\n";
$md .= "Events set aside: an event whose id another worker's batch held uncommitted, written to `adstream.set_aside` and "
  . "judged again by the next batch (docs/architecture.md). Minute rows: rows of `ad_stats_minute` inserted and updated, "
  . "and of the updates those that were HOT (no index entry); each worker writes its own rows (its stripe). Both from "
  . "`pg_stat_user_tables`, at least (a worker reports its counts at most once a second).\n\n";
$md .= "| measurement | workers | ads | duplicates | events/s | / reference | server CPU s/M | WAL bytes/event | events set aside | minute rows inserted, updated (HOT) | Lock waits | most frequent worker states | check |\n";
$md .= "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n";
for my $id (qw(workers_1 e2e workers_4 workers_1_sized workers_4_sized ads_100k dup_0))
{
	my $row = $r{$id} or next;
	(my $waits = $row->{waits} // '') =~ s/;/, /g;
	my @w = split /, /, $waits;
	$waits = join(', ', @w[0 .. ($#w < 3 ? $#w : 3)]);
	my ($ins, $upd, $hot) = split m{/}, $row->{minute_rows} // '';
	$md .= sprintf("| %s | %s | %s | %s%% | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
		$id eq 'e2e' ? 'reference (adstream end to end)' : $row->{description}, $row->{workers}, fmt_int($row->{ads}),
		100 * $row->{dup_ratio}, fmt_int(rate($row)), ratio(rate($row), rate($e2e)),
		fmt('%.1f', per_m($row, 'server_cpu_s')), fmt('%.0f', per_ev($row, 'wal_bytes')), fmt_int($row->{set_aside}),
		defined $hot ? sprintf('%s, %s (%s)', fmt_int($ins), fmt_int($upd), fmt_int($hot)) : '–',
		num($row->{lock_pct}) ? "$row->{lock_pct}%" : (defined $row->{lock_pct} && $row->{lock_pct} ne '' ? "$row->{lock_pct}%" : '–'),
		$waits || '–', $row->{check});
}
$md .= "\n![throughput](throughput.png) ![scaling](scaling.png)\n\n";

# ---- growth
my @grow = grep { /^grow_/ } @order;
if (@grow)
{
	$md .= "## Cost as the database fills\n\n";
	$md .= "Consecutive rounds into the same database: the source is paused while each round is produced and resumed to "
	  . "consume it. Each round's events are 10 minutes later than the previous round's, all within the dedup horizon, so "
	  . "every event id stays in the dedup index. Rates are over the whole round (resume to last commit).\n\n";
	$md .= "| round | events already stored | messages | events/s | server CPU s/M | WAL bytes/event | table bytes/event |\n";
	$md .= "|---:|---:|---:|---:|---:|---:|---:|\n";
	for my $id (@grow)
	{
		my $row = $r{$id};
		(my $n = $id) =~ s/^grow_//;
		$md .= sprintf("| %s | %s | %s | %s | %s | %s | %s |\n", $n, fmt_int($row->{stored_before}),
			fmt_int($row->{messages}), fmt_int($row->{events_per_s}), fmt('%.1f', per_m($row, 'server_cpu_s')),
			fmt('%.0f', per_ev($row, 'wal_bytes')), fmt('%.0f', per_ev($row, 'table_bytes')));
	}
	$md .= "\nAll rounds against the union of their truths: $r{$grow[0]}{check}.\n\n![growth](growth.png)\n\n";
}

$md .= "## Files\n\n`results.csv` has every measurement with absolute values (seconds, CPU seconds, bytes, kB); "
  . "`tmp/` (not kept in git) the logs, poll series and truth files of the run. See `bench/README.md`.\n";

open(my $o, '>', "$out/results.md") or die;
print $o $md;
close $o;

# ---- plots
sub write_file { my ($path, $text) = @_; open(my $fh, '>', $path) or die "$path: $!"; print $fh $text; close $fh; }

my $bars = '';
my @bar_rows = ((defined $raw_best ? ["raw librdkafka", $raw_best] : ()),
	map { $r{$_} ? [$r{$_}{description}, rate($r{$_})] : () } qw(e2e e2e_publish e2e_attr_publish copy alt workers_1 workers_4 ads_100k dup_0));
for my $i (0 .. $#bar_rows)
{
	(my $label = $bar_rows[$i][0]) =~ s/"/'/g;
	$label =~ s/^adstream with /adstream, /;
	$label =~ s/^usual alternative.*/per-event alternative (libpq)/;
	$label =~ s/^strong baseline.*/strong baseline (libpq COPY)/;
	$bars .= sprintf("%d \"%s\" %.0f\n", $i, $label, $bar_rows[$i][1]);
}
write_file("$tmp/throughput.dat", $bars);
my @bar_values = sort { $a <=> $b } grep { defined && $_ > 0 } map { $_->[1] } @bar_rows;
my ($ymin, $ymax) = @bar_values ? ($bar_values[0] / 3, $bar_values[-1] * 2) : (1, 10);

my $scal = '';
for my $id (qw(workers_1 e2e workers_4))
{
	$scal .= "$r{$id}{workers} " . rate($r{$id}) . "\n" if $r{$id};
}
write_file("$tmp/scaling.dat", $scal);

my $grow = '';
for my $id (@grow)
{
	my $row = $r{$id};
	$grow .= sprintf("%d %.0f %.1f\n", $row->{stored_before}, $row->{events_per_s}, per_ev($row, 'wal_bytes'));
}
write_file("$tmp/growth.dat", $grow);

# freshness CDF, thinned to at most 2000 points
my @lat;
if (open(my $lf, '<', "$tmp/fresh.latencies_ms"))
{
	chomp(@lat = <$lf>);
	close $lf;
}
my $cdf = '';
if (@lat)
{
	my $step = @lat > 2000 ? @lat / 2000 : 1;
	for (my $i = 0; $i < @lat; $i += $step)
	{
		$cdf .= sprintf("%s %.5f\n", $lat[int($i)], (int($i) + 1) / @lat);
	}
	$cdf .= sprintf("%s 1\n", $lat[-1]);
}
write_file("$tmp/freshness.dat", $cdf);
my $have_by_second = -s "$tmp/fresh.by_second" ? 1 : 0;

my $gp = <<"EOG";
set terminal pngcairo size 1000,560 font ",10" noenhanced
set grid ytics
set datafile separator whitespace

set output "$out/throughput.png"
set title "Events/s ($meta{MODE} mode, $meta{DATE}; log scale)"
set style fill solid 0.6
set boxwidth 0.7
set logscale y
set yrange [$ymin:$ymax]
set xtics rotate by -30 left
set ylabel "events/s"
set bmargin 9
plot "$tmp/throughput.dat" using 1:3:xtic(2) with boxes notitle, \\
     "" using 1:3:(sprintf("%.0f", \$3)) with labels offset 0,0.8 notitle
unset logscale y
set yrange [*:*]
set bmargin
set xtics norotate
unset xtics
set xtics

set output "$out/scaling.png"
set title "adstream events/s by number of workers"
set xlabel "workers"
set ylabel "events/s"
set xrange [0.5:4.5]
set yrange [0:*]
set xtics (1, 2, 4)
plot "$tmp/scaling.dat" using 1:2 with linespoints lw 2 pt 7 notitle
set xrange [*:*]
set xtics autofreq

set output "$out/growth.png"
set title "Consecutive rounds into one database"
set xlabel "events already stored"
set ylabel "events/s"
set y2label "WAL bytes/event"
set y2tics
set ytics nomirror
set yrange [0:*]
set y2range [0:*]
plot "$tmp/growth.dat" using 1:2 axes x1y1 with linespoints lw 2 pt 7 title "events/s", \\
     "" using 1:3 axes x1y2 with linespoints lw 2 pt 5 title "WAL bytes/event"
unset y2tics
unset y2label
set ytics mirror

set output "$out/freshness.png"
set title "Produce to visible in ad_stats_minute (CDF)"
set xlabel "milliseconds"
set ylabel "fraction of messages"
set yrange [0:1]
set xrange [0:*]
plot "$tmp/freshness.dat" using 1:2 with lines lw 2 notitle
EOG
$gp .= <<"EOG" if $have_by_second;

set output "$out/freshness_by_second.png"
set title "Mean produce-to-visible latency by second of production"
set xlabel "second of the run"
set ylabel "milliseconds"
set yrange [0:*]
set xrange [*:*]
plot "$tmp/fresh.by_second" using 1:2 with linespoints lw 2 pt 7 notitle
EOG
write_file("$tmp/plots.gp", $gp);
system('gnuplot', "$tmp/plots.gp") == 0 or warn "gnuplot failed\n";
