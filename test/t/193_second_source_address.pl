# One source per topic and Kafka cluster: a second source of the kind on the
# topic, under another address of the same brokers, is refused, at
# create_source when the brokers answer (their cluster ids are compared), and
# by its workers when they connect otherwise (the older source keeps the
# topic).  Either way nothing is counted twice.
#
# Found by review: create_source compared bootstrap lists by address only, so
# '127.0.0.1:P' and 'localhost:P' (one broker) were two clusters, and every
# event was counted twice (readers sum over sources).
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['ads:2']);
my $node = AdstreamTest::node('second');
sub sql { return $node->safe_psql('postgres', $_[0]); }
my $bootstrap = $broker->{bootstrap};
my $same = $bootstrap =~ s/127\.0\.0\.1/localhost/gr;
isnt($same, $bootstrap, "the broker has a second address ($same)");

sql("SELECT adstream.create_source('ads_a', '$bootstrap', 'ads')");
my ($ret, $out, $err) = $node->psql('postgres', "SELECT adstream.create_source('ads_b', '$same', 'ads')");
isnt($ret, 0, 'create_source refuses a second source on the topic under another address of the same broker');
like($err, qr/source "ads_a" already consumes topic "ads" of this Kafka cluster/, '... naming the source that has it');
like($err, qr/Both broker lists answer as cluster /, '... and the cluster id that tells');

# The brokers do not answer at create time: the second source is created, and
# its workers refuse the topic once they see the cluster id.
$broker->cmd('down all');
sql("SELECT adstream.create_source('ads_b', '$same', 'ads')");
$broker->cmd('up all');
my $run = AdstreamTest::loadgen($broker, topic => 'ads', count => 2000, seed => 9011);
AdstreamTest::wait_consumed($node, 'ads_a', $run->{sent});
ok($node->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM adstream.source_status
	   WHERE source = 'ads_b' AND last_error LIKE '%source "ads_a" already consumes topic "ads" of Kafka cluster %'}),
	'a worker of the second source refuses the topic once its brokers answer, and says why in source_status')
  or diag sql(q{SELECT source, partition, worker_state, last_error FROM adstream.source_status});
is(sql(q{SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets WHERE source = 'ads_b'}), 0,
	'... and consumes nothing');
AdstreamTest::check_truth($node, [ $run->{truth} ], 'one topic, two bootstrap spellings: counted once');

$broker->stop;
done_testing();
