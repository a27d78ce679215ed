# A source's offsets are positions in its Kafka cluster's topic: its workers
# record the cluster id, alter_source compares the new brokers' with it, and
# a worker whose brokers answer as another cluster does not consume.
#
# Found by review: alter_source refused another cluster only when the new
# list shared no address with the old one, so two steps (A -> "A,B" -> B)
# moved a source to cluster B, where it read from cluster A's offsets and
# skipped what lay before them, silently.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $a = AdstreamTest::Broker->start(topics => ['ads:2']);
my $b = AdstreamTest::Broker->start(topics => ['ads:2']);
my $node = AdstreamTest::node('hop');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql("SELECT adstream.create_source('ads', '$a->{bootstrap}', 'ads')");
my $run_a = AdstreamTest::loadgen($a, topic => 'ads', count => 1000, seed => 9021);
AdstreamTest::wait_consumed($node, 'ads', $run_a->{sent});
my $cluster = sql(q{SELECT cluster_id FROM adstream.source_config WHERE name = 'ads'});
isnt($cluster, '', "the workers recorded the source's cluster id ($cluster)");

my ($ret) = $node->psql('postgres', qq{SELECT adstream.alter_source('ads', '{"brokers": "$b->{bootstrap}"}')});
isnt($ret, 0, 'moving straight to another cluster is refused');
my ($r1) = $node->psql('postgres', qq{SELECT adstream.alter_source('ads', '{"brokers": "$a->{bootstrap},$b->{bootstrap}"}')});
my ($r2, $out, $err) = $node->psql('postgres', qq{SELECT adstream.alter_source('ads', '{"brokers": "$b->{bootstrap}"}')});
ok($r1 != 0 || $r2 != 0, 'moving to another cluster in two steps (A -> A,B -> B) is refused too')
  or diag 'both alters were accepted; brokers now: ' . sql(q{SELECT brokers FROM adstream.sources});
like($err, qr/The cluster ids differ/, '... because the cluster ids differ') if $r1 == 0;
sql(qq{SELECT adstream.alter_source('ads', '{"brokers": "$a->{bootstrap}"}')}) if $r1 == 0;

# Brokers that answer as another cluster than the one recorded (a DNS name
# moved, a database restored beside another Kafka): here the record is
# changed, since the brokers cannot be.  The workers restart and refuse.
sql(q{UPDATE adstream.sources SET cluster_id = 'another-cluster'});
sql(q{SELECT adstream.alter_source('ads', '{"workers": 2}')});
my $run_more = AdstreamTest::loadgen($a, topic => 'ads', count => 500, seed => 9023);
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 2 FROM adstream.source_status
	   WHERE last_error LIKE '%brokers "%" answer as Kafka cluster %, but the offsets of this source are positions in cluster another-cluster'}),
	'workers whose brokers answer as another cluster stop, and say why in source_status')
  or diag sql(q{SELECT partition, worker_state, last_error FROM adstream.source_status});
is(sql(q{SELECT sum(next_offset) FROM adstream.offsets WHERE source = 'ads'}), $run_a->{sent},
	'... and consume nothing');

# Put right: the cluster is the source's again, the workers go on.
sql(qq{UPDATE adstream.sources SET cluster_id = '$cluster'});
sql(q{SELECT adstream.alter_source('ads', '{"workers": 1}')});
AdstreamTest::wait_consumed($node, 'ads', $run_a->{sent} + $run_more->{sent});
AdstreamTest::check_truth($node, [ $run_a->{truth}, $run_more->{truth} ], 'cluster A counted once');

$a->stop;
$b->stop;
done_testing();
