# The dedup index's filter tier, forced to be wrong often: fingerprints of
# 3 bits (adstream.dedup_fingerprint_bits), so that most lookups of a new id
# match some slot, and a hot tier of 1,000 ids (adstream.dedup_hot_size), so
# that nearly every remembered id lives in the filter.  Every "maybe" is
# looked up in dedup_log; the counts must still equal the ground truth:
#   1. two streams (one 5 hours old), duplicates across workers;
#   2. a worker killed with kill -9 and an immediate stop while a third
#      stream flows: the filter is rebuilt from dedup_log;
#   3. the second stream replayed byte for byte: every valid event is a
#      duplicate found on disk, none counts again;
#   4. expiry gives up the old stream's hour: its slots and segments go, the
#      rest is still caught (the third stream replayed).
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['ads:4']);
my $node = AdstreamTest::node('dedup_filter',
	'adstream.dedup_index_size' => 200000,
	'adstream.dedup_hot_size' => 1000,
	'adstream.dedup_fingerprint_bits' => 3,
	'adstream.batch_max_messages' => 500);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub status { return AdstreamTest::dedup_status($node); }
sub logged_ids { return AdstreamTest::logged_ids($node); }
sub accepted { return AdstreamTest::accepted_events($node); }
sub counted { return AdstreamTest::counted_events($node); }

sql("SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 2}')");

my $now = int(time() * 1000);
my @common = ('--late-ratio', 0, '--now-ms', $now);
my %start = (21 => $now - 5 * 3600 * 1000, 22 => $now - 30 * 60 * 1000, 23 => $now - 20 * 60 * 1000);

# 1. Two streams, one of them 5 hours old.
my $old = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 21,
	start_ms => $start{21}, args => \@common);
my $new = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 22,
	start_ms => $start{22}, args => \@common);
my $total = $old->{sent} + $new->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
AdstreamTest::check_truth($node, [ $old->{truth}, $new->{truth} ], 'tiny filter');

my $st = status();
cmp_ok($st->{hot_entries}, '<=', 1000, "the hot tier holds at most its 1,000 ids ($st->{hot_entries})");
cmp_ok($st->{filter_entries}, '>', 30000, "the filter holds the rest ($st->{filter_entries} ids, $st->{segments} segments)");
is($st->{entries}, logged_ids(), 'the index holds exactly the ids in dedup_log');
my $false_positives = $st->{disk_lookups} - $st->{disk_duplicates};
cmp_ok($false_positives, '>', 1000,
	"false positives were frequent and looked up on disk ($st->{disk_lookups} lookups, $false_positives not found there)");
cmp_ok($st->{disk_duplicates}, '>', 0,
	"duplicates of ids in the filter were found on disk ($st->{disk_duplicates})");

# 2. kill -9 a worker while a third stream flows, then an immediate stop.
my $third = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 23,
	start_ms => $start{23}, args => [ @common, '--rate', 8000 ], background => 1);
$node->poll_query_until('postgres',
	"SELECT coalesce(sum(next_offset), 0) > $total + 4000 FROM adstream.offsets") or die;
my @pids = AdstreamTest::worker_pids($node, 's');
kill 'KILL', $pids[0];
$node->poll_query_until('postgres',
	"SELECT coalesce(sum(next_offset), 0) > $total + 10000 FROM adstream.offsets") or die;
$node->stop('immediate');
$node->start;
AdstreamTest::finish_loadgen($third);
$total += $third->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
AdstreamTest::check_truth($node, [ $old->{truth}, $new->{truth}, $third->{truth} ],
	'tiny filter, after kill -9 and an immediate stop');
like(PostgreSQL::Test::Utils::slurp_file($node->logfile),
	qr/dedup index rebuilt from adstream\.dedup_log: \d+ event ids in \d+ ms/, 'the index was rebuilt');
$st = status();
is($st->{entries}, logged_ids(), 'after the restarts the index holds exactly the ids in dedup_log');

# 3. The second stream again, byte for byte: nothing counts again.
my ($acc, $cnt) = (accepted(), counted());
my $lookups0 = status()->{disk_duplicates};
my $again = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 22,
	start_ms => $start{22}, args => \@common);
$total += $again->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
is(accepted(), $acc, 'the replayed stream adds no accepted event');
is(counted(), $cnt, 'the replayed stream adds no count');
my ($unique) = PostgreSQL::Test::Utils::slurp_file($new->{truth}) =~ /^total,unique,(\d+)$/m;
$st = status();
cmp_ok($st->{disk_duplicates} - $lookups0, '>=', $unique - 1000,
	'its duplicates were found on disk (' . ($st->{disk_duplicates} - $lookups0) . " of $unique)");

# 4. Expiry gives up the old stream's hour (horizon 2 h behind the newest
# event): its slots and segments go, the rest is still caught.
my $segs0 = $st->{segments};
my $entries0 = $st->{entries};
$node->append_conf('postgresql.conf', "adstream.dedup_horizon = '2h'\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('adstream.dedup_horizon') = '2h'}) or die;
sql('SELECT adstream.expire_dedup_state()');
$st = status();
is($st->{entries}, logged_ids(), 'after expiry the index holds exactly the ids left in dedup_log');
cmp_ok($st->{entries}, '<', $entries0, "expiry forgot the old hour's ids ($entries0 -> $st->{entries})");
cmp_ok($st->{segments}, '<', $segs0, "and freed its segments ($segs0 -> $st->{segments})");
is(sql("SELECT count(*) FROM adstream.dedup_log WHERE hour < to_timestamp($start{22} / 1000.0) - interval '1 hour'"), 0,
	'no dedup_log row of the old hour is left');
($acc, $cnt) = (accepted(), counted());
my $again3 = AdstreamTest::loadgen($broker, topic => 'ads', count => 20000, seed => 23,
	start_ms => $start{23}, args => \@common);
$total += $again3->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
is(accepted(), $acc, 'after expiry, the third stream replayed adds no accepted event');
is(counted(), $cnt, '... and no count');

$node->stop;
$broker->stop;
done_testing();
