# The ad-events watermark that gates attribution: a partition that has
# messages to read but no committed watermark yet holds it back.  (Found by
# the benchmark: a worker that started on a backlog and had not committed its
# first batch was ignored, and orders were judged before its clicks.)
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run ();
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['ads:2']);
my $node = AdstreamTest::node('gating');
$node->safe_psql('postgres', "SELECT adstream.create_source('ads', '$broker->{bootstrap}', 'ads')");

my $t0 = int(time() / 60) * 60 * 1000 - 30 * 60 * 1000;	# ms, half an hour ago
sub event
{
	my ($n, $min) = @_;
	return sprintf('{"event_id":"00000000-0000-4000-8000-%012d","type":"click","ad_id":1,"campaign_id":1,'
		  . '"user_id":1,"store_id":1,"ts":%d}', $n, $t0 + $min * 60_000);
}
sub produce
{
	my ($partition, @lines) = @_;
	my $in = join("\n", @lines) . "\n";
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'ads', '-p', $partition ], \$in)
	  or die "kcat failed";
}
my $wm = 'adstream.ad_events_watermark()';

# Partition 0 has events up to minute 10; partition 1 is empty and holds nothing back.
produce(0, event(1, 5), event(2, 10));
AdstreamTest::wait_consumed($node, 'ads', 2);
# (once its worker has seen the partition's end: the status is published every second)
ok($node->poll_query_until('postgres', "SELECT $wm = to_timestamp($t0 / 1000.0 + 600)"),
	'an empty partition does not hold the watermark back');

# Block the worker's commits, then give partition 1 an event it reads but cannot commit.
my ($in, $out) = ('', '');
my $blocker = IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$out);
$in .= "BEGIN;\nLOCK TABLE adstream.offsets IN SHARE ROW EXCLUSIVE MODE;\nSELECT 'locked';\n";
$blocker->pump until $out =~ /locked/;
produce(1, event(3, 20));
$node->poll_query_until('postgres', q{
SELECT high_watermark > 0 FROM adstream.partition_status() WHERE partition = 1}) or die;
is($node->safe_psql('postgres', "SELECT $wm"), '-infinity',
	'a partition with messages to read and no watermark yet holds it back');

$in .= "COMMIT;\n\\q\n";
$blocker->finish;
AdstreamTest::wait_consumed($node, 'ads', 3);
is($node->safe_psql('postgres', "SELECT $wm = to_timestamp($t0 / 1000.0 + 600)"), 't',
	'once committed, the lowest partition watermark counts again');

$node->stop;
$broker->stop;
done_testing();
