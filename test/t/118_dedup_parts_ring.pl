# A part's ring of settled entries names hot-tier elements, which all parts
# share: an element forgotten by expiry (a dropped source's ids) leaves its
# record behind in its part's ring, and is soon reused by a claim in another
# part.  The record must not then match the other part's entry: if it did,
# the settling backend would move that entry, under the wrong part's lock,
# into the wrong part's filter, where no claim of the id ever looks, and a
# duplicate of it would count again.  Each part numbering its settles from
# its own counter made such matches common (the records' numbers and the
# other parts' are close); this test replays a stream after such a forget,
# and any id moved to the wrong part counts again.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['adsa:4', 'adsb:8']);
my $node = AdstreamTest::node('dedup_parts_ring',
	'adstream.dedup_index_size' => 100000,
	'adstream.dedup_hot_size' => 1000,
	'adstream.batch_max_messages' => 500);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub accepted { return sql("SELECT coalesce(sum(accepted), 0) FROM adstream.offsets WHERE source = 'b'"); }

sub logged_ids { return sql("SELECT coalesce(sum(length(ids) / 16), 0) FROM adstream.dedup_log WHERE source_id = (SELECT id FROM adstream.sources WHERE name = 'b')"); }

my $now = int(time() * 1000);
my @common = ('--late-ratio', 0, '--now-ms', $now);
my $start = $now - 30 * 60 * 1000;

# 1. Source a's ids settle: the hot tier and every part's ring hold some.
sql("SELECT adstream.create_source('a', '$broker->{bootstrap}', 'adsa')");
my $a = AdstreamTest::loadgen($broker, topic => 'adsa', count => 3000, seed => 41,
	start_ms => $start, args => \@common);
AdstreamTest::wait_consumed($node, 'a', $a->{sent});
my $hot = sql('SELECT hot_entries FROM adstream.dedup_index_status()');
cmp_ok($hot, '>', 100, "source a's newest ids are hot ($hot)");

# 2. Source a dropped and its ids forgotten: their elements are free, their
#    ring records stay behind.
sql("SELECT adstream.drop_source('a', forget_counts => true)");
sql('SELECT adstream.expire_dedup_state()');
is(sql('SELECT entries FROM adstream.dedup_index_status()'), 0, "source a's ids forgotten");

# 3. Source b: its claims reuse the freed elements in every part.
sql("SELECT adstream.create_source('b', '$broker->{bootstrap}', 'adsb')");
my $b = AdstreamTest::loadgen($broker, topic => 'adsb', count => 20000, seed => 43,
	start_ms => $start, args => \@common);
my $total = $b->{sent};
AdstreamTest::wait_consumed($node, 'b', $total);
AdstreamTest::check_truth($node, [ $b->{truth} ], 'source b after a forgotten source a', source => 'b');
my ($unique) = PostgreSQL::Test::Utils::slurp_file($b->{truth}) =~ /^total,unique,(\d+)$/m;
note('index: ' . sql('SELECT entries, hot_entries, filter_entries, moved_to_filter FROM adstream.dedup_index_status()'));
is(logged_ids(), $unique, "dedup_log holds one id of b per distinct valid id ($unique)");
is(sql('SELECT entries FROM adstream.dedup_index_status()'), $unique, 'and so does the index');

# 4. b's stream again, byte for byte: every id is a duplicate.
my $acc = accepted();
my $again = AdstreamTest::loadgen($broker, topic => 'adsb', count => 20000, seed => 43,
	start_ms => $start, args => \@common);
$total += $again->{sent};
AdstreamTest::wait_consumed($node, 'b', $total);
is(accepted() - $acc, 0, 'the replayed stream adds no accepted event (no id was moved to another part)');
is(sql('SELECT entries FROM adstream.dedup_index_status()'), $unique, 'and no entry');

$node->stop;
$broker->stop;
done_testing();
