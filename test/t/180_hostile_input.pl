# Bad input and bad actors, against a real server and the embedded broker.
#
# 1. Hand-made hostile records (multi-MB values, nesting, huge numbers,
#    invalid UTF-8, NUL bytes, duplicate keys, empty, NULL and non-JSON
#    values), each between two good events: every one is dead-lettered at
#    its own partition and offset with the expected reason, payload_bytes and
#    the first 8 KiB of its bytes; the good events count exactly.
# 2. Roles without adstream_admin (and admins) logged in for real: what they
#    may not touch, and that holding advisory locks (all that SQL offers any
#    role) does not stall ingestion: adstream's own locks live in a lock
#    space pg_advisory_lock() cannot reach.
# 3. A flood: a 100% poison stream at a steady rate for ADSTREAM_FLOOD_SECONDS
#    (default 12; 60 for the long version) at ADSTREAM_FLOOD_RATE records/s
#    (default 3000), with a trickle of good records interleaved.  Exact
#    against the ground truth, no worker restarted, no per-record log lines,
#    bounded bytes per dead letter, and retention removes them.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Digest::MD5 qw(md5_hex);
use IPC::Run ();
use Test::More;
use Time::HiRes qw(time usleep);

my $MAX = 16384;    # adstream.max_message_bytes here (the loadgen's oversized records are that size)
my $flood_s = $ENV{ADSTREAM_FLOOD_SECONDS} // 12;
my $flood_rate = $ENV{ADSTREAM_FLOOD_RATE} // 3000;

my $broker = AdstreamTest::Broker->start(topics => [ 'hostile:4', 'flood:64' ]);
my $node = AdstreamTest::node('hostile', 'adstream.max_message_bytes' => $MAX);
$node->safe_psql('postgres', qq{
SELECT adstream.create_source('h', '$broker->{bootstrap}', 'hostile', options => '{"workers": 2}');
SELECT adstream.create_source('flood', '$broker->{bootstrap}', 'flood', options => '{"workers": 2}');
});
$node->poll_query_until('postgres', 'SELECT count(*) = 4 FROM adstream.worker_status() WHERE pid IS NOT NULL')
  or die 'workers did not start';
my @pids_before = sort(AdstreamTest::worker_pids($node, 'h'), AdstreamTest::worker_pids($node, 'flood'));

# ---------------------------------------------------------------------------
# 1. Hostile records
# ---------------------------------------------------------------------------

# Good events: distinct ids, a few ads, one second apart from the shared
# origin.  good() counts its event into the truth; stray() does not (for
# events embedded in hostile records).
my (%minute, $good_n, $stray_n);
sub good
{
	my $i = ++$good_n;
	my ($text, $ad, $click, $ts) = event_text($i);
	my $cell = $minute{"$ad," . int($ts / 60000) * 60} //= [ 0, 0 ];
	$cell->[ $click ? 1 : 0 ]++;
	return $text;
}
sub stray { return (event_text(500000 + ++$stray_n))[0]; }
sub event_text
{
	my ($i) = @_;
	my $ad = 900001 + $i % 5;
	my $click = $i % 4 == 0;
	my $ts = $AdstreamTest::START_MS + ($i % 100000) * 1000;
	return (sprintf('{"event_id":"00000000-0000-4000-8000-%012d","type":"%s","ad_id":%d,'
		  . '"campaign_id":77,"user_id":%d,"store_id":3,"ts":%d}',
		$i, $click ? 'click' : 'impression', $ad, 1000 + $i, $ts), $ad, $click, $ts);
}

# A valid event with extra ignored text (must not contain '"' or '\').
my $body = '"event_id":"6f1c2a4e-8a7b-4c1e-9d2f-0b5e3c7a9d11","type":"click","ad_id":1,'
  . '"campaign_id":2,"user_id":3,"store_id":4,"ts":' . $AdstreamTest::START_MS;
sub event_with { my ($extra) = @_; return "{$body,$extra}"; }

# Deterministic filler: printable and incompressible (xorshift), or binary
# without NUL.
my $xs = 88172645463325252;
sub rnd { $xs ^= $xs << 13; $xs ^= $xs >> 7; $xs ^= $xs << 17; return $xs; }    # 64-bit unsigned wrap
sub noise
{
	my ($n, $lo, $hi) = @_;
	my $s = '';
	$s .= chr($lo + rnd() % ($hi - $lo + 1)) while length($s) < $n;
	$s =~ tr/"\\/ab/ if $lo >= 0x20;
	return $s;
}
# A valid event padded to exactly $n bytes with incompressible text.
sub padded
{
	my ($n) = @_;
	my $head = event_with('"pad":"');
	return $head . noise($n - length($head) - 2, 0x21, 0x7e) . '"}';
}

my $I64 = '9223372036854775807';
my @cases = (
	# [partition, expected reason, value, what]
	[ 0, 'ok',           padded($MAX),               "an event of exactly max_message_bytes ($MAX)" ],
	[ 0, 'oversized',    padded($MAX + 1),           'one byte over max_message_bytes' ],
	[ 0, 'oversized',    padded(1 << 20),            '1 MiB' ],
	[ 1, 'oversized',    padded(3 << 20),            '3 MiB' ],
	[ 2, 'oversized',    padded(4 << 20),            '4 MiB' ],
	[ 3, 'oversized',    '[' x (1 << 20),            '1 MiB of "[" (size is checked before nesting)' ],
	[ 0, 'empty',        '',                         'an empty value' ],
	[ 0, 'empty',        undef,                      'a NULL value (tombstone)' ],
	[ 0, 'invalid_json', 'hello',                    'plain text' ],
	[ 0, 'invalid_json', " \t\r\n ",                 'only whitespace' ],
	[ 0, 'invalid_json', "\xef\xbb\xbf" . stray(),    'a byte order mark before JSON' ],
	[ 0, 'invalid_json', stray() . stray(),            'two JSON objects' ],
	[ 0, 'invalid_json', '<event id="1"/>',          'XML' ],
	[ 0, 'invalid_utf8', "\x1f\x8b\x08\x01" . noise(2000, 1, 255), 'gzip-like binary' ],
	[ 0, 'not_object',   '[' . stray() . ']',         'an array holding an event' ],
	[ 0, 'not_object',   'null',                     'JSON null' ],
	[ 0, 'not_object',   '"' . ('x' x 1000) . '"',   'a JSON string' ],
	[ 1, 'ok',           event_with('"x":' . ('[' x 63) . (']' x 63)), 'nesting of exactly 64' ],
	[ 1, 'invalid_json', event_with('"x":' . ('[' x 64) . (']' x 64)), 'nesting of 65' ],
	[ 1, 'invalid_json', '[' x 16000,                'nesting of 16000 (unclosed)' ],
	[ 1, 'invalid_json', '{"a":' x 3000,             '3000 nested objects (unclosed)' ],
	[ 1, 'invalid_json', ('[' x 5000) . (']' x 5000), 'nesting of 5000 (closed)' ],
	[ 1, 'ok',           event_with("\"big\":$I64"),   'int64 max in an ignored field' ],
	[ 1, 'out_of_range', "{$body,\"x\":1}" =~ s/"ad_id":1/"ad_id":9223372036854775808/r, 'ad_id 2^63' ],
	[ 1, 'out_of_range', "{$body}" =~ s/"user_id":3/"user_id":99999999999999999999999999999999/r, 'a 32-digit user_id' ],
	[ 1, 'wrong_type',   "{$body}" =~ s/"ad_id":1/"ad_id":1e400/r, 'ad_id 1e400' ],
	[ 1, 'wrong_type',   "{$body}" =~ s/"ts":\d+/"ts":1e30/r, 'ts 1e30' ],
	[ 1, 'out_of_range', "{$body}" =~ s/"ts":\d+/"ts":99999999999999999999999/r, 'ts of 23 digits' ],
	[ 1, 'ok',           event_with('"x":1e400,"y":-1e-400'), 'huge exponents in ignored fields' ],
	[ 1, 'ok',           event_with('"x":' . ('9' x 12000)), 'a 12000-digit number in an ignored field' ],
	[ 2, 'invalid_utf8', event_with("\"x\":\"a\xffb\""),        'byte 0xff in a string' ],
	[ 2, 'invalid_utf8', event_with("\"x\":\"\xc0\xaf\""),      'an overlong "/"' ],
	[ 2, 'invalid_utf8', event_with("\"x\":\"\xed\xa0\x80\""),  'a UTF-16 surrogate' ],
	[ 2, 'invalid_utf8', event_with("\"x\":\"\xf4\x90\x80\x80\""), 'a code point above U+10FFFF' ],
	[ 2, 'invalid_utf8', "{$body,\"x\":\"ab\xe2\x82",          'a sequence cut off at the end' ],
	[ 2, 'invalid_utf8', "{\"\xff\":1,$body}",                  'invalid UTF-8 in a key' ],
	[ 2, 'invalid_utf8', "{$body}\xff",                         'invalid UTF-8 after the JSON text' ],
	[ 2, 'ok',           event_with("\"x\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""), 'valid 2-, 3- and 4-byte UTF-8' ],
	[ 3, 'nul_byte',     "\0{$body}",                           'a leading NUL' ],
	[ 3, 'nul_byte',     event_with("\"x\":\"a\0b\""),          'a NUL in a string' ],
	[ 3, 'nul_byte',     "{$body}\0",                           'a trailing NUL' ],
	[ 3, 'nul_byte',     "\xff{$body}\0",                       'NUL and invalid UTF-8 (NUL wins)' ],
	[ 3, 'ok',           event_with('"x":"a\\u0000b"'),         'an escaped \\u0000' ],
	[ 3, 'duplicate_key', event_with('"event_id":"6f1c2a4e-8a7b-4c1e-9d2f-0b5e3c7a9d11"'), 'event_id twice' ],
	[ 3, 'duplicate_key', event_with('"ad\\u005fid":1'),         'ad_id twice, once escaped' ],
	[ 3, 'ok',           event_with('"x":1,"x":2'),             'an ignored key twice' ],
	[ 3, 'invalid_json', event_with('"x":') . ('1' x 15000),    'a long token after the end' ],
);

# The valid hostile events all share one id: the first is counted, the rest
# are duplicates.  Interleave good events, one before and one after each case.
my (@records, @expect, %next_off);
my ($dups, $n_ok) = (0, 0);
for my $c (@cases)
{
	my ($p, $reason, $v, $what) = @$c;
	push @records, [ $p, good() ];
	$next_off{$p}++;
	push @records, [ $p, $v ];
	push @expect, [ $p, $next_off{$p}++, $reason, $v, $what ];
	if ($reason eq 'ok')
	{
		$n_ok++;
		my $cell = $minute{'1,' . int($AdstreamTest::START_MS / 60000) * 60} //= [ 0, 0 ];
		$cell->[1] = 1;    # a click, counted once
	}
}
push @records, [ $_, good() ] for 0 .. 3;
my $sent_h = AdstreamTest::replay($broker, 'hostile', \@records);
note "replayed $sent_h records, " . scalar(@cases) . ' hostile';

# The hostile records' truth, in the load generator's format (ad 1 is campaign 2).
my $truth_h = PostgreSQL::Test::Utils::tempdir() . '/truth-hostile.csv';
{
	my %rej;
	$rej{ $_->[2] }++ for grep { $_->[2] ne 'ok' } @expect;
	open(my $fh, '>', $truth_h) or die;
	for my $k (sort keys %minute)
	{
		my ($ad, $win) = split /,/, $k;
		print $fh "minute,$ad," . ($ad == 1 ? 2 : 77) . ",$win,$minute{$k}[0],$minute{$k}[1]\n";
	}
	print $fh "reject,$_,$rej{$_}\n" for sort keys %rej;
	my $rejected = 0;
	$rejected += $_ for values %rej;
	print $fh "total,unique," . ($good_n + ($n_ok ? 1 : 0)) . "\ntotal,rejected,$rejected\n";
	close($fh);
}

AdstreamTest::wait_consumed($node, 'h', $sent_h);

# Each hostile record: its dead letter (or none), reason, size and first 8 KiB.
my %got;
for my $row (split /\n/, $node->safe_psql('postgres', q{
SELECT partition, "offset", reason, payload_bytes, octet_length(payload), md5(payload), detail
  FROM adstream.rejected_events WHERE source = 'h'}))
{
	my ($p, $o, @rest) = split /\|/, $row, 7;
	$got{"$p/$o"} = \@rest;
}
for my $e (@expect)
{
	my ($p, $o, $reason, $v, $what) = @$e;
	my $g = $got{"$p/$o"};
	my $len = length($v // '');
	if ($reason eq 'ok')
	{
		ok(!$g, "$what: accepted (partition $p offset $o)") or diag explain $g;
		next;
	}
	my $keep = substr($v // '', 0, 8192);
	is_deeply($g ? [ @$g[ 0 .. 3 ] ] : undef, [ $reason, $len, length($keep), md5_hex($keep) ],
		"$what: dead letter $reason, payload_bytes $len, first " . length($keep) . ' bytes kept')
	  or diag "detail: " . ($g ? $g->[4] : 'no dead letter');
}
is(scalar(keys %got), scalar(grep { $_->[2] ne 'ok' } @expect), 'no other dead letters for the hostile stream');
like($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT detail, ' / ') FROM adstream.rejected_events WHERE source = 'h' AND reason = 'oversized'"),
	qr/^[ -~]+$/, 'oversized details are printable ASCII');
AdstreamTest::check_truth($node, [$truth_h], 'hostile records', source => 'h');

# ---------------------------------------------------------------------------
# 2. Bad actors: roles without adstream_admin, and admins, logged in
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE ROLE ops LOGIN IN ROLE adstream_admin;
CREATE ROLE watcher LOGIN IN ROLE adstream_reader;
});

# The SQLSTATE of running $sql as a logged-in $role ('00000' on success).
sub sqlstate_as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		extra_params => [ '-U', $role ]);
	return '00000' if $ret == 0;
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "?$err";
}

my ($wpid) = AdstreamTest::worker_pids($node, 'h');
# What PostgreSQL's catalog checks (sql/permissions.sql, test/pgtap/privileges.sql)
# do not show: the same refusals for real logins, the workers' own tables
# written directly, and the worker processes themselves.
my @denied = (
	[ q{INSERT INTO adstream.dedup_log VALUES (1, now(), '\x00')}, 'forging dedup ids' ],
	[ q{DELETE FROM adstream.dedup_log}, 'erasing dedup ids' ],
	[ q{INSERT INTO adstream.offsets (source, topic, partition, next_offset) VALUES ('h', 'hostile', 9, 0)}, 'inserting an offset' ],
	[ q{DELETE FROM adstream.offsets}, 'deleting offsets' ],
	[ q{INSERT INTO adstream.rejected_events (source, topic, partition, "offset", reason, payload_bytes) VALUES ('h', 'x', 0, 0, 'empty', 0)}, 'forging a dead letter' ],
	[ q{INSERT INTO adstream.outbox DEFAULT VALUES}, 'writing the outbox' ],
	[ q{BEGIN; LOCK TABLE adstream.offsets IN SHARE MODE; COMMIT}, 'locking offsets against the workers' ],
	[ q{BEGIN; LOCK TABLE adstream.ad_stats_minute IN ACCESS EXCLUSIVE MODE; COMMIT}, 'locking ad_stats_minute' ],
	[ q{SELECT adstream.expire_rejected_events()}, 'expire_rejected_events' ],
	[ q{SELECT kafka_options FROM adstream.sources}, 'reading credentials' ],
	[ qq{SELECT pg_terminate_backend($wpid)}, 'terminating a consumer worker' ],
	[ qq{SELECT pg_cancel_backend($wpid)}, 'cancelling a consumer worker' ],
	[ q{ALTER SYSTEM SET adstream.rejected_retention = '1d'}, 'ALTER SYSTEM' ],
);
for my $role ('mallory', 'watcher', 'ops')
{
	for my $d (@denied)
	{
		is(sqlstate_as($role, $d->[0]), '42501', "$role: $d->[1] is denied");
	}
	is(sqlstate_as($role, q{SET adstream.max_message_bytes = 100}), '55P02',
		"$role: adstream.max_message_bytes cannot be changed in a session");
}
is(sqlstate_as('ops', q{SELECT * FROM adstream.source_config}), '00000', 'ops: may read source_config');
is(sqlstate_as('mallory', q{SELECT adstream.create_source('m', 'k:9092', 't')}), '42501', 'mallory: create_source is denied');
is(sqlstate_as('mallory', q{SELECT adstream.create_sink('m', 'k:9092')}), '42501', 'mallory: create_sink is denied');
my @alive = AdstreamTest::worker_pids($node, 'h');
ok(grep({ $_ == $wpid } @alive), "worker $wpid is still running after the attempts");

my @hostile_truths;
# Advisory locks are open to any role that can connect.  Up to 0.3 the
# workers took pg_advisory_xact_lock_shared(hashtext('adstream.partitions'),
# hashtext('dedup_expiry')) in every ad-events batch, so that a role holding
# it stalled ingestion; adstream's locks are now out of SQL's reach, and the
# function that takes them is not open to such a role.
is(sqlstate_as('mallory', q{SELECT adstream._lock('adstream.dedup_expiry', 0, true)}), '42501',
	'mallory: adstream._lock is denied');
{
	my ($in, $out, $err) = ("SELECT pg_advisory_lock(hashtext('adstream.partitions'), hashtext('dedup_expiry'));\nSELECT 'locked';\n", '', '');
	my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-U', 'mallory' ],
		'<', \$in, '>', \$out, '2>', \$err);
	my $deadline = time() + 60;
	$h->pump while $out !~ /locked/ && time() < $deadline;
	like($out, qr/locked/, 'mallory holds the advisory lock the batches take');
	my $run = AdstreamTest::loadgen($broker, topic => 'hostile', count => 2000, seed => 3,
		args => [ '--max-bytes', $MAX ]);
	my $target = $sent_h + $run->{sent};
	ok($node->poll_query_until('postgres',
			"SELECT coalesce(sum(next_offset), 0) >= $target FROM adstream.offsets WHERE source = 'h'"),
		'ingestion goes on while a role without privileges holds the advisory lock 0.3 used');
	note 'waiting on advisory locks: ' . $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted");
	$in .= "SELECT pg_advisory_unlock_all();\n\\q\n";
	$h->finish;
	AdstreamTest::wait_consumed($node, 'h', $target);
	$sent_h = $target;
	@hostile_truths = ($truth_h, $run->{truth});
	AdstreamTest::check_truth($node, \@hostile_truths, 'after the lock is released', source => 'h');
}

# ---------------------------------------------------------------------------
# 3. The flood: a 100% poison stream at a steady rate, good records trickling
# ---------------------------------------------------------------------------
my $log_before = -s $node->logfile;
my $poison_n = int($flood_s * $flood_rate);
my $good_rate = 200;
note "flood: $poison_n poison records at $flood_rate/s for $flood_s s, and good ones at $good_rate/s";
my $t_flood = time();
my $poison = AdstreamTest::loadgen($broker, topic => 'flood', count => $poison_n, seed => 10, background => 1,
	args => [ '--max-bytes', $MAX, '--rate', $flood_rate, '--bad-ratio', 1, '--dup-ratio', 0,
		'--late-ratio', 0, '--future-ratio', 0 ]);
my $trickle = AdstreamTest::loadgen($broker, topic => 'flood', count => $flood_s * $good_rate, seed => 11,
	background => 1, args => [ '--max-bytes', $MAX, '--rate', $good_rate ]);
# Lag while it runs: the consumer keeps up with the poison.
my $max_lag = 0;
while ($poison->{handle}->pumpable || $trickle->{handle}->pumpable)
{
	$_->{handle}->pump_nb for grep { $_->{handle}->pumpable } $poison, $trickle;
	my $lag = $node->safe_psql('postgres', "SELECT coalesce(sum(lag), 0) FROM adstream.source_status WHERE source = 'flood'");
	$max_lag = $lag if $lag > $max_lag;
	usleep(500_000);
}
AdstreamTest::finish_loadgen($_) for $poison, $trickle;
my $t_sent = time() - $t_flood;
AdstreamTest::wait_consumed($node, 'flood', $poison->{sent} + $trickle->{sent});
my $t_done = time() - $t_flood;
AdstreamTest::check_truth($node, [ @hostile_truths, $poison->{truth}, $trickle->{truth} ], 'after the flood');

my ($dead, $bytes, $avg_payload) = split /\|/, $node->safe_psql('postgres', q{
SELECT count(*), pg_total_relation_size('adstream.rejected_events'), round(avg(pg_column_size(payload)))
  FROM adstream.rejected_events});
# The test's own statements are logged (log_statement = all); count the rest.
my $log_slice = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_before);
my @server_lines = grep { /^\d{4}-\d\d-\d\d / && !/180_hostile_input/ } split /\n/, $log_slice;
my $log_growth = 0;
$log_growth += length($_) + 1 for @server_lines;
diag sprintf('flood: %d poison + %d good records sent in %.1f s (%.0f/s), consumed %.1f s after the start, '
	  . 'max lag %d; %d dead letters in %d bytes (%.0f per dead letter, stored payload %d bytes on average); server log +%d bytes',
	$poison->{sent}, $trickle->{sent}, $t_sent, ($poison->{sent} + $trickle->{sent}) / $t_sent, $t_done, $max_lag,
	$dead, $bytes, $bytes / $dead, $avg_payload, $log_growth);
cmp_ok($bytes / $dead, '<', 8192 + 1024, 'dead letters take less than the 8 KiB payload cap plus 1 KiB each');
cmp_ok($log_growth / $poison->{sent}, '<', 1,
	sprintf('the server log grows by less than a byte per poison record (%d lines, %d bytes)', scalar(@server_lines), $log_growth))
  or diag join("\n", @server_lines[ 0 .. 19 ]);

is($node->safe_psql('postgres', 'SELECT count(*), sum(restarts) FROM adstream.worker_status() WHERE pid IS NOT NULL'),
	'4|0', 'four workers running, none restarted');
is(join(' ', sort(AdstreamTest::worker_pids($node, 'h'), AdstreamTest::worker_pids($node, 'flood'))),
	join(' ', @pids_before), 'the same worker processes as before the hostile input');

# Retention: a short adstream.rejected_retention (its minimum is 60 s) and
# dead letters made older than that are deleted, the recent ones stay.
$node->safe_psql('postgres', q{
ALTER SYSTEM SET adstream.rejected_retention = '60s';
SELECT pg_reload_conf();
});
$node->poll_query_until('postgres', q{SELECT current_setting('adstream.rejected_retention') = '1min'}) or die;
my $old = $node->safe_psql('postgres', q{
UPDATE adstream.rejected_events SET received_at = now() - interval '61 seconds' WHERE source = 'flood';
UPDATE adstream.rejected_events SET received_at = now() WHERE source = 'h';  -- however long the flood took
SELECT count(*) FROM adstream.rejected_events WHERE source = 'flood'});
my $kept = $node->safe_psql('postgres', q{SELECT count(*) FROM adstream.rejected_events WHERE source = 'h'});
is($node->safe_psql('postgres', 'SELECT adstream.expire_rejected_events(5000)'), $old,
	"expire_rejected_events deletes the $old dead letters older than 60 s");
is($node->safe_psql('postgres', 'SELECT count(*) FROM adstream.rejected_events'), $kept,
	"and keeps the $kept recent ones");
$node->safe_psql('postgres', 'VACUUM adstream.rejected_events');
diag 'rejected_events after expiry and VACUUM: '
  . $node->safe_psql('postgres', q{SELECT pg_total_relation_size('adstream.rejected_events')}) . ' bytes';

unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/PANIC|TRAP|terminated by signal|server process .* exited/,
	'no crash in the server log');
# Two workers created the same new partition when the lock above was let go:
# before ensure_partitions took the parent's lock, the second failed with
# "already exists" and retried its batch.
unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/relation "[a-z_0-9]+" already exists/,
	'no batch failed on a partition another worker had just created');
$node->stop;
$broker->stop;
done_testing();
