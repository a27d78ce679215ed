# Orders held for the watermark (adstream.attribution_hold) are lag: while
# a partition holds orders behind what it committed, source_status's
# lag_seconds counts from the oldest message not committed, not from the
# last one read.  A backlog is read at once after a pause: a dead letter
# (stored at once), then two orders 15 s apart that no ad-events watermark
# passes (held).  Once the dead letter is committed, the partition's lag
# must be at least the 15 s the first held order has waited longer than
# the second.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'orders:1', 'ads:1' ]);
my $node = AdstreamTest::node('orderholdlag', 'adstream.attribution_hold' => "'10min'");
$node->safe_psql('postgres', qq{
SELECT adstream.create_source('shop', '$broker->{bootstrap}', 'orders', 'orders');
SELECT adstream.create_source('ads', '$broker->{bootstrap}', 'ads');});

# An ad-events watermark an hour back, which no order here passes (without
# any watermark nothing would be held).
my $in = sprintf('{"event_id":"%s","type":"click","ad_id":1,"campaign_id":1,"user_id":1,"store_id":1,"ts":%d}',
	'10000000-0000-4000-8000-000000000001', (time() - 3600) * 1000) . "\n";
IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'ads', '-p', '0' ], \$in) or die "kcat failed";
AdstreamTest::wait_consumed($node, 'ads', 1);
$node->poll_query_until('postgres', 'SELECT adstream.ad_events_watermark() IS NOT NULL') or die;

sub id { my ($n) = @_; return sprintf('00000000-0000-4000-8000-%012d', $n); }

sub order
{
	my ($n) = @_;
	return sprintf('{"order_id":"%s","user_id":%d,"store_id":1,"amount":"1.50","currency":"EUR","ts":%d}',
		id($n), $n, time() * 1000);
}

sub produce
{
	my (@lines) = @_;
	my $in = join("\n", @lines) . "\n";
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'orders', '-p', '0' ], \$in)
	  or die "kcat failed";
}

sub status
{
	my ($what) = @_;
	return $node->safe_psql('postgres', "SELECT $what FROM adstream.source_status WHERE source = 'shop'");
}

$node->poll_query_until('postgres',
	"SELECT worker_state = 'consuming' FROM adstream.source_status WHERE source = 'shop'") or die;
$node->safe_psql('postgres', "SELECT adstream.pause_source('shop')");
$node->poll_query_until('postgres',
	"SELECT worker_pid IS NULL FROM adstream.source_status WHERE source = 'shop'") or die;

# The backlog: a dead letter and an order, then 15 s later another order.
produce('not json', order(1));
my $first = time();
sleep(15);
produce(order(2));
$node->safe_psql('postgres', "SELECT adstream.resume_source('shop')");

# The dead letter is committed, the orders behind it are held.
$node->poll_query_until('postgres', q{
SELECT p.read_position = 3 FROM adstream.partition_status() p JOIN adstream.sources s ON s.id = p.source_id
 WHERE s.name = 'shop'}) or die;
$node->poll_query_until('postgres',
	"SELECT next_offset = 1 FROM adstream.offsets WHERE source = 'shop'") or die;
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.orders"), '0', 'the two orders are held');

# A report after the commit.
$node->poll_query_until('postgres',
	"SELECT positions_at > last_commit_at AND lag_seconds IS NOT NULL FROM adstream.source_status WHERE source = 'shop'")
  or die status('*');
my ($lag, $messages) = split /\|/, status('lag_seconds, lag');
is($messages, '2', 'the held orders are lag in messages');
cmp_ok($lag, '>=', time() - $first - 1,
	"lag_seconds ($lag) counts from the first held order, read before the commit of the dead letter");

$node->stop;
$broker->stop;
done_testing();
