# Offset gaps are never silent (issue #11, case 4).  On 0.4 each of these
# moved the offset with a LOG line only:
#   1. a paused source whose unread messages the broker trimmed: the gap is
#      recorded in adstream.offset_gaps, in the transaction that moves the
#      offset, equal to what the broker trimmed, and raised as a WARNING;
#   2. a stored offset beyond the partition's end (a topic deleted and
#      created again): recorded, and reading resumes at the beginning;
#   3. with start => latest, a partition without a stored offset after the
#      source's first start (one that appeared later) is read from its
#      beginning, not from its end.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'trim:1', 'tail:2' ]);
my $node = AdstreamTest::node('offset_gaps');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub produce
{
	my ($topic, $partition, $from, $n) = @_;
	my $ts = int(time() * 1000) - 60_000;
	my $in = join('', map {
		sprintf(qq({"event_id":"00000000-0000-4000-8000-%012d","type":"impression","ad_id":1,"campaign_id":1,"user_id":1,"store_id":1,"ts":%d}\n),
			$_, $ts) } $from .. $from + $n - 1);
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', $topic, '-p', $partition ], \$in)
	  or die 'kcat failed';
}

# The first offset the broker still holds, and its end.
sub low_high
{
	my ($topic, $partition) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'kcat', '-C', '-b', $broker->{bootstrap}, '-t', $topic, '-p', $partition,
		'-o', 'beginning', '-c', 1, '-e', '-f', '%o\n' ], '>', \$out, '2>', \$err)
	  or die "kcat failed: $err";
	chomp $out;
	return $out;
}

# ---- 1. retention trims what a paused source has not read ----------------
sql("SELECT adstream.create_source('trim', '$broker->{bootstrap}', 'trim')");
produce('trim', 0, 1, 100);
AdstreamTest::wait_consumed($node, 'trim', 100);
sql("SELECT adstream.pause_source('trim')");
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM adstream.worker_status() WHERE pid IS NOT NULL})
  or die 'the worker did not stop';

# The mock broker keeps 5 MiB per partition: 40,000 events of ~190 bytes
# (7.6 MB) push the first ones out, the 100 read ones included.
my $args = [ '--partitions', 1, '--dup-ratio', 0, '--bad-ratio', 0, '--late-ratio', 0, '--future-ratio', 0 ];
my $more = AdstreamTest::loadgen($broker, topic => 'trim', count => 40_000, seed => 41, args => $args);
my $end = 100 + $more->{sent};
my $low = low_high('trim', 0);
cmp_ok($low, '>', 100, "the broker trimmed unread messages (its log now starts at $low)");

my $log_pos = -s $node->logfile;
sql("SELECT adstream.resume_source('trim')");
AdstreamTest::wait_consumed($node, 'trim', $end);
is(sql(q{SELECT partition || ':' || from_offset || '-' || to_offset || ':' || reason FROM adstream.offset_gaps WHERE source = 'trim'}),
	"0:100-$low:retention", 'the gap is recorded: exactly what the broker trimmed');
is(sql(q{SELECT accepted + duplicates + rejected FROM adstream.offsets WHERE source = 'trim'}),
	100 + $end - $low, 'every message the broker still had was read once, and nothing else');
like(PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_pos),
	qr/WARNING:.*partition 0, offsets 100 to $low of topic "trim" were never read/, 'a WARNING names the gap');
# The gap was the source's error until the next batch committed (issue #14:
# errors clear on recovery); the history keeps it.
ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM adstream.status_history
	WHERE name = 'trim' AND error LIKE '%never read%offset_gaps%'}), 'the status history shows the gap');
is(sql(q{SELECT offset_gaps FROM adstream.source_status WHERE source = 'trim'}), 1,
	'source_status counts the gap');

# ---- 2. a stored offset beyond the partition's end -------------------------
sql("SELECT adstream.pause_source('trim')");
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM adstream.worker_status() WHERE pid IS NOT NULL})
  or die 'the worker did not stop';
my $beyond = $end + 1_000_000;
sql("UPDATE adstream.offsets SET next_offset = $beyond WHERE source = 'trim'");
my $accepted = sql(q{SELECT accepted FROM adstream.offsets WHERE source = 'trim'});
sql("SELECT adstream.resume_source('trim')");
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM adstream.offset_gaps WHERE source = 'trim'})
  or die 'no gap recorded for the offset beyond the end';
is(sql(q{SELECT from_offset || '-' || to_offset || ':' || reason FROM adstream.offset_gaps WHERE source = 'trim' ORDER BY id DESC LIMIT 1}),
	"$beyond-$low:offset_beyond_end", 'the gap beyond the end is recorded; reading resumes at the beginning');
AdstreamTest::wait_consumed($node, 'trim', $end);
is(sql(q{SELECT accepted FROM adstream.offsets WHERE source = 'trim'}), $accepted,
	'what is read again is not counted again');

# ---- 3. start => latest only at the source's first start -------------------
produce('tail', 0, 100_001, 10);
produce('tail', 1, 100_101, 10);
sql("SELECT adstream.create_source('tail', '$broker->{bootstrap}', 'tail', options => '{\"start\": \"latest\", \"workers\": 2}')");
$node->poll_query_until('postgres', q{SELECT count(*) = 2 AND sum(next_offset) = 20 FROM adstream.offsets WHERE source = 'tail'})
  or die 'start => latest did not store both ends';
sql("SELECT adstream.pause_source('tail')");
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM adstream.worker_status() w JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'tail' AND w.pid IS NOT NULL})
  or die 'the workers did not stop';
# As if partition 1 had appeared after the source started.
sql("DELETE FROM adstream.offsets WHERE source = 'tail' AND partition = 1");
sql("SELECT adstream.resume_source('tail')");
AdstreamTest::wait_consumed($node, 'tail', 20);
is(sql(q{SELECT partition || ':' || accepted FROM adstream.offsets WHERE source = 'tail' ORDER BY 1}),
	"0:0\n1:10", 'a partition without a stored offset after the first start is read from its beginning');

$node->stop;
$broker->stop;
done_testing();
