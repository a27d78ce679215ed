# The dedup index split by id into parts (src/dedup_index.c): each part has
# its own lock, hot entries, ring and share of the filter, and an id's part
# comes from its hash.  With full 19-bit fingerprints (a wrong part's
# buckets would almost never match) and a hot tier of 1,000 ids (about 16 a part), so
# that nearly every committed id moves to its part's filter:
#   1. four workers ingest a stream; the parts' counts add up to exactly the
#      ids in dedup_log, and the hot tier stays within its size;
#   2. the stream replayed byte for byte: every valid event is a duplicate
#      found through its part's filter and the disk (thousands of ids, so
#      every part has some), nothing counts again;
#   3. after an immediate stop the index is rebuilt from dedup_log, each id
#      into its part, and the replay again adds nothing.
# A claim that looked in another part than the move or the rebuild put the
# id in would count the replay again.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['ads:8']);
my $node = AdstreamTest::node('dedup_parts',
	'adstream.dedup_index_size' => 100000,
	'adstream.dedup_hot_size' => 1000,
	'adstream.batch_max_messages' => 500);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub status { return AdstreamTest::dedup_status($node); }
sub logged_ids { return AdstreamTest::logged_ids($node); }
sub accepted { return AdstreamTest::accepted_events($node); }
sub counted { return AdstreamTest::counted_events($node); }

sql("SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 4}')");

my $now = int(time() * 1000);
my @common = ('--late-ratio', 0, '--now-ms', $now);
my $start = $now - 30 * 60 * 1000;

# 1. One stream, four workers.
my $first = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 31,
	start_ms => $start, args => \@common);
my $total = $first->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
AdstreamTest::check_truth($node, [ $first->{truth} ], 'four workers, a split index');
my ($unique) = PostgreSQL::Test::Utils::slurp_file($first->{truth}) =~ /^total,unique,(\d+)$/m;

my $st = status();
is($st->{entries}, logged_ids(), "the parts' counts add up to the ids in dedup_log ($st->{entries})");
is($st->{entries}, $unique, 'one entry per distinct valid id of the stream');
cmp_ok($st->{hot_entries}, '<=', 1000, "the hot tier holds at most its 1,000 ids ($st->{hot_entries})");
cmp_ok($st->{moved_to_filter}, '>=', $st->{entries} - 1000,
	"the rest moved to the parts' filters ($st->{moved_to_filter} moved, $st->{filter_entries} there)");

# 2. The stream again, byte for byte.
my ($acc, $cnt) = (accepted(), counted());
my $dups0 = $st->{disk_duplicates};
my $again = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 31,
	start_ms => $start, args => \@common);
$total += $again->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
is(accepted(), $acc, 'the replayed stream adds no accepted event');
is(counted(), $cnt, 'the replayed stream adds no count');
$st = status();
cmp_ok($st->{disk_duplicates} - $dups0, '>=', $unique - 1000,
	'its duplicates were found through the filter and the disk (' . ($st->{disk_duplicates} - $dups0) . " of $unique)");
is($st->{entries}, logged_ids(), 'the index still holds exactly the ids in dedup_log');

# 3. An immediate stop: the index is rebuilt from dedup_log, part by part.
$node->stop('immediate');
$node->start;
$node->poll_query_until('postgres', 'SELECT ready FROM adstream.dedup_index_status()') or die;
$st = status();
is($st->{entries}, logged_ids(), 'the rebuilt index holds exactly the ids in dedup_log');
($acc, $cnt) = (accepted(), counted());
$dups0 = $st->{disk_duplicates};
my $third = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 31,
	start_ms => $start, args => \@common);
$total += $third->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
is(accepted(), $acc, 'after the rebuild, the replayed stream adds no accepted event');
is(counted(), $cnt, '... and no count');
$st = status();
cmp_ok($st->{disk_duplicates} - $dups0, '>=', $unique - 1000,
	'its duplicates were found in the rebuilt filter and on disk (' . ($st->{disk_duplicates} - $dups0) . " of $unique)");

$node->stop;
$broker->stop;
done_testing();
