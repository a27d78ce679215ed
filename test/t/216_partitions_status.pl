# Status truth on a node that consumes a share of a topic (the "partitions"
# option, docs/deployment.md "Several nodes"): source_status and the metrics
# list this node's partitions only.
#
# Found by review: source_status listed every partition of the topic that a
# worker had seen, without the source's "partitions", so the other nodes'
# partitions showed as consuming with lag_stale, the lag_stale metric stayed 1
# (the alert the docs recommend fired for good) and "partitions" counted the
# whole topic.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['ads:4']);
my $node = AdstreamTest::node('share');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql("SELECT adstream.create_source('ads', '$broker->{bootstrap}', 'ads', options => '{\"partitions\": \"0-1\"}')");
my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 2000, seed => 9061, args => [ '--co-partition' ]);
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM adstream.offsets WHERE source = 'ads'})
  or die 'partitions 0 and 1 were not consumed';
sleep 2;    # a few status reports

is(sql(q{SELECT string_agg(partition::text, ',' ORDER BY partition) FROM adstream.source_status WHERE source = 'ads'}),
	'0,1', 'source_status lists the partitions this node consumes, not the other nodes\'')
  or diag sql(q{SELECT partition, worker_state, next_offset, lag, lag_stale FROM adstream.source_status ORDER BY partition});
is(sql(q{SELECT value FROM adstream.metrics WHERE kind = 'source' AND name = 'ads' AND metric = 'lag_stale'}), 0,
	'metrics: lag_stale is 0 while this node\'s partitions are current');
is(sql(q{SELECT value FROM adstream.metrics WHERE kind = 'source' AND name = 'ads' AND metric = 'partitions'}), 2,
	'metrics: partitions counts this node\'s');

$broker->stop;
done_testing();
