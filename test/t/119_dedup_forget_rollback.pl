# The dedup index forgets a rewound window's hours inside rewind_source's
# transaction (adstream._dedup_forget_hours), but shared memory does not roll
# back: if that transaction does not commit (here rewind_source itself fails
# after its forget: the brokers place no message at the window's start),
# dedup_log keeps the window's ids while the index had forgotten them, and a
# duplicate of any of them counted again (every one of them, before the
# fix).  Now the index is marked not ready and rebuilt from dedup_log.
# (Found while reviewing h-dedupsplit; not specific to its parts.)
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['ads:4']);
my $node = AdstreamTest::node('dedup_forget_rollback',
	'adstream.dedup_index_size' => 100000,
	'adstream.batch_max_messages' => 500);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub accepted { return sql("SELECT coalesce(sum(accepted), 0) FROM adstream.offsets WHERE source = 's'"); }

sql("SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads')");
# events of past hours only: a replaced window must not end in the future
my $now = int(time() / 3600) * 3600 * 1000 - 60 * 1000;
my @common = ('--late-ratio', 0, '--now-ms', $now);
my $start = $now - 30 * 60 * 1000;
my $first = AdstreamTest::loadgen($broker, topic => 'ads', count => 4000, seed => 51,
	start_ms => $start, args => \@common);
my $total = $first->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
AdstreamTest::check_truth($node, [ $first->{truth} ], 'before the rewind');
my $entries = sql('SELECT entries FROM adstream.dedup_index_status()');

# A replacing rewind of the hours that hold the stream, rolled back.
my ($ok, $out, $err) = $node->psql('postgres', q{
BEGIN;
SELECT adstream.rewind_source('s', to_time => date_bin('1 hour', now(), '1970-01-01 00:00+00') - interval '2 hours',
	window_end => date_bin('1 hour', now(), '1970-01-01 00:00+00'), mode => 'replace');
ROLLBACK;});
note("rewind: $out $err");
like($err, qr/ERROR/, 'the rewind failed after its forget');
is(sql('SELECT count(*) FROM adstream.rewinds'), 0, 'the rewind rolled back');
is(sql('SELECT ready FROM adstream.dedup_index_status()'), 'f',
	'the index is marked not ready: the next batch rebuilds it from dedup_log');

# The stream again: every id is a duplicate.
my $acc = accepted();
my $again = AdstreamTest::loadgen($broker, topic => 'ads', count => 4000, seed => 51,
	start_ms => $start, args => \@common);
$total += $again->{sent};
AdstreamTest::wait_consumed($node, 's', $total);
is(accepted() - $acc, 0, 'the replayed stream adds no accepted event');
is(sql('SELECT ready FROM adstream.dedup_index_status()'), 't', 'the index was rebuilt');
is(sql('SELECT entries FROM adstream.dedup_index_status()'), $entries, 'with every id of dedup_log, and no more');

$node->stop;
$broker->stop;
done_testing();
