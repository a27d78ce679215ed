# The shared-memory dedup index at its limits: a stream with more distinct
# event ids than the index holds stops with an error that names the
# setting, without losing or double counting anything; after a restart with
# a larger index (rebuilt from adstream.dedup_log) it resumes and the result
# equals the ground truth.  Duplicates of ids committed before the restart
# are still caught afterwards.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['ads:4']);
my $node = AdstreamTest::node('dedup_index',
	'adstream.dedup_index_size' => 1000,
	'adstream.batch_max_messages' => 200);
$node->safe_psql('postgres',
	"SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 2}')");

my $first = AdstreamTest::loadgen($broker, topic => 'ads', count => 3000, seed => 7);
$node->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM adstream.source_status WHERE last_error LIKE '%dedup index is full%'})
  or die 'the full index was not reported';
pass('a full dedup index is reported in source_status');
like(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/HINT:.*adstream\.dedup_index_size/,
	'the error names adstream.dedup_index_size');

my $stuck = $node->safe_psql('postgres', 'SELECT sum(next_offset) FROM adstream.offsets');
cmp_ok($stuck, '<', $first->{sent}, "ingestion stopped short of the stream ($stuck of $first->{sent})");
is($node->safe_psql('postgres', 'SELECT entries <= capacity FROM adstream.dedup_index_status()'), 't',
	'the index never holds more than its capacity');
is($node->safe_psql('postgres', 'SELECT sum(accepted) FROM adstream.offsets'),
	$node->safe_psql('postgres', 'SELECT coalesce(sum(length(ids) / 16), 0) FROM adstream.dedup_log'),
	'every accepted event has its id in dedup_log');

$node->append_conf('postgresql.conf', "adstream.dedup_index_size = 100000\n");
$node->restart;
AdstreamTest::wait_consumed($node, 's', $first->{sent});
is($node->safe_psql('postgres', 'SELECT ready FROM adstream.dedup_index_status()'), 't',
	'the larger index was rebuilt');
AdstreamTest::check_truth($node, [ $first->{truth} ], 'after the restart with a larger index');

# The same stream again (same seed, same bytes): every event is now a
# duplicate of one committed before, or a dead letter again.
my $again = AdstreamTest::loadgen($broker, topic => 'ads', count => 3000, seed => 7);
AdstreamTest::wait_consumed($node, 's', $first->{sent} + $again->{sent});
is($node->safe_psql('postgres', 'SELECT sum(accepted) FROM adstream.offsets'),
	$node->safe_psql('postgres', q{SELECT sum(split_part(line, ',', 3)::bigint) FROM
		(SELECT unnest(string_to_array(pg_read_file('} . $first->{truth} . q{'), E'\n')) AS line) t
		WHERE line LIKE 'total,unique,%'}),
	'a replayed stream adds no accepted event');

$node->stop;
$broker->stop;
done_testing();
