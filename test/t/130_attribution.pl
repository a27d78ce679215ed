# Order attribution, case by case: last click wins within the window, clicks
# after the order, outside the window, for another store or user, view-through,
# and an orders stream that runs ahead of the ad events: orders are held
# unread for adstream.attribution_hold, then wait, durably, until the
# ad-events watermark passes their time; an order the watermark passes
# while it is held is judged as it is stored, and a crash while it is held
# reads it again.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'ads:1', 'orders:1' ]);
my $node = AdstreamTest::node('attribution',
	'adstream.attribution_window' => "'1h'",
	'adstream.view_through_window' => "'30min'",
	'adstream.attribution_max_wait' => "'1h'");
$node->safe_psql('postgres', qq{
SELECT adstream.create_source('ads', '$broker->{bootstrap}', 'ads');
SELECT adstream.create_source('shop', '$broker->{bootstrap}', 'orders', 'orders');});

my $t0 = int(time() / 3600) * 3600 * 1000 - 3 * 3600 * 1000;	# ms, three hours ago
sub at { my ($min) = @_; return $t0 + $min * 60_000; }
sub id { my ($n) = @_; return sprintf('00000000-0000-4000-8000-%012d', $n); }

sub event
{
	my ($n, $type, $ad, $user, $store, $min) = @_;
	return sprintf('{"event_id":"%s","type":"%s","ad_id":%d,"campaign_id":%d,"user_id":%d,"store_id":%d,"ts":%d}',
		id($n), $type, $ad, 1000 + $ad, $user, $store, at($min));
}

sub order
{
	my ($n, $user, $store, $min) = @_;
	return sprintf('{"order_id":"%s","user_id":%d,"store_id":%d,"amount":"%d.50","currency":"EUR","ts":%d}',
		id(900 + $n), $user, $store, $n, at($min));
}

sub produce
{
	my ($topic, @lines) = @_;
	my $in = join("\n", @lines) . "\n";
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', $topic, '-p', '0' ], \$in)
	  or die "kcat failed";
}

# Phase 1: ad events up to minute 45.
produce('ads',
	event(1, 'click', 11, 1, 1, 0),			# 1: click before the order
	event(2, 'click', 21, 2, 1, 20),		# 2: click after the order only
	event(3, 'click', 31, 3, 1, -30),		# 3: 70 min before the order: outside the 1 h window
	event(4, 'click', 41, 4, 1, 1),			# 4: two clicks, the last one wins
	event(5, 'click', 42, 4, 1, 5),
	event(6, 'click', 51, 5, 2, 1),			# 5: click for another store
	event(7, 'click', 61, 6, 1, 1),			# 6: click by another user
	event(8, 'impression', 71, 8, 1, 2),	# 7: view-through: impression only
	event(9, 'click', 81, 9, 1, 1),			# 8: a click beats a later impression
	event(10, 'impression', 82, 9, 1, 3),
	event(11, 'impression', 99, 99, 99, 45));	# the watermark reaches minute 45

# The orders come once the ad events are in: the orders worker then judges
# the eight the watermark has passed as it stores them (_store_orders), and
# only the ninth, held for attribution_hold (2 s) first, waits for a pass
# (below, both paths are checked).
$node->poll_query_until('postgres',
	"SELECT adstream.ad_events_watermark() >= to_timestamp(@{[ at(45) / 1000 ]})") or die;
produce('orders',
	order(1, 1, 1, 10), order(2, 2, 1, 10), order(3, 3, 1, 40), order(4, 4, 1, 10),
	order(5, 5, 3, 10), order(6, 7, 1, 10), order(7, 8, 1, 10), order(8, 9, 1, 10),
	order(9, 10, 1, 50));					# 9: ahead of the ad events

$node->poll_query_until('postgres',
	"SELECT count(*) = 8 FROM adstream.orders WHERE status <> 'waiting'") or die;
$node->poll_query_until('postgres', "SELECT count(*) = 9 FROM adstream.orders") or die;

my $got = $node->safe_psql('postgres', q{
SELECT o.user_id || ':' || o.status || ':' || coalesce(o.attribution, '-') || ':' || coalesce(o.ad_id::text, '-')
  FROM adstream.orders o ORDER BY o.order_id});
is($got, join("\n",
	'1:attributed:click:11',
	'2:unattributed:-:-',
	'3:unattributed:-:-',
	'4:attributed:click:42',
	'5:unattributed:-:-',
	'7:unattributed:-:-',
	'8:attributed:view:71',
	'9:attributed:click:81',
	'10:waiting:-:-'), 'each order is judged by the last-click rule; the early one waits');

is($node->safe_psql('postgres', 'SELECT user_id FROM adstream.waiting_orders'), '10',
	'the order ahead of the ad events is visible in waiting_orders');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM adstream.orders WHERE status <> 'waiting' AND decided_at = received_at}),
	'8', 'the orders the watermark had passed were judged as they were stored, in one transaction');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM adstream.attributed_orders a JOIN adstream.orders o USING (order_id)
 WHERE a.record_uuid = adstream.record_uuid('attributed_orders', a.order_id::text)
   AND a.click_event_id = o.event_id AND a.amount = o.amount AND a.order_ts = o.ts}),
	'4', 'attributed_orders holds the four credited orders with stable record UUIDs');

# Phase 2: the ad events catch up; the waiting order finds its click.
produce('ads', event(12, 'click', 91, 10, 1, 45), event(13, 'impression', 99, 99, 99, 55));
$node->poll_query_until('postgres',
	"SELECT status = 'attributed' FROM adstream.orders WHERE user_id = 10") or die;
is($node->safe_psql('postgres', 'SELECT a.ad_id FROM adstream.attributed_orders a JOIN adstream.orders o USING (order_id) WHERE o.user_id = 10'),
	'91', 'once the watermark passes it, the waiting order is credited to the click before it');
is($node->safe_psql('postgres', 'SELECT decided_at > received_at FROM adstream.orders WHERE user_id = 10'),
	't', 'the order that waited was judged by a later pass');

# A crash cannot judge an order twice or change its record.
my $before = $node->safe_psql('postgres', 'SELECT string_agg(record_uuid::text, \',\' ORDER BY order_id) FROM adstream.attributed_orders');
$node->stop('immediate');
$node->start;
produce('orders', order(1, 1, 1, 10));		# a duplicate order after the restart
$node->poll_query_until('postgres', "SELECT sum(next_offset) = 10 FROM adstream.offsets WHERE source = 'shop'") or die;
is($node->safe_psql('postgres', 'SELECT string_agg(record_uuid::text, \',\' ORDER BY order_id) FROM adstream.attributed_orders'),
	$before, 'after an immediate stop and a duplicate order, the attributions are unchanged');
is($node->safe_psql('postgres', "SELECT duplicates FROM adstream.offsets WHERE source = 'shop'"), '1',
	'the re-sent order is counted as a duplicate');

# Phase 3: an order ahead of the ad events, held (a minute at most) until
# they pass it: never stored waiting, judged as it is stored, once, also
# across a crash while it was held.
$node->safe_psql('postgres', "ALTER SYSTEM SET adstream.attribution_hold = '1min'; SELECT pg_reload_conf();");
produce('orders', order(11, 11, 1, 60));
$node->poll_query_until('postgres', q{
SELECT p.read_position = 11 FROM adstream.partition_status() p JOIN adstream.sources s ON s.id = p.source_id
 WHERE s.name = 'shop'}) or die;
sleep(1);
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM adstream.orders WHERE user_id = 11) || ':'
	|| (SELECT next_offset FROM adstream.offsets WHERE source = 'shop')}),
	'0:10', 'an order ahead of the ad events is held unread: not stored, its offset not committed');
$node->stop('immediate');
$node->start;
$node->poll_query_until('postgres', q{
SELECT p.read_position = 11 FROM adstream.partition_status() p JOIN adstream.sources s ON s.id = p.source_id
 WHERE s.name = 'shop'}) or die;
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.orders WHERE user_id = 11"), '0',
	'after a crash it is read again and held again');
produce('ads', event(14, 'click', 111, 11, 1, 58), event(15, 'impression', 99, 99, 99, 65));
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM adstream.orders WHERE user_id = 11") or die;
is($node->safe_psql('postgres', q{
SELECT o.status || ':' || o.ad_id || ':' || (o.decided_at = o.received_at) || ':' || count(a.*)
  FROM adstream.orders o LEFT JOIN adstream.attributed_orders a USING (order_id)
 WHERE o.user_id = 11 GROUP BY o.order_id}),
	'attributed:111:true:1', 'once the watermark passes it, the held order is judged as it is stored, credited once');
is($node->safe_psql('postgres', "SELECT next_offset || ':' || duplicates FROM adstream.offsets WHERE source = 'shop'"),
	'11:1', 'its offset is committed with it, and reading it twice counted no duplicate');

$node->stop;
$broker->stop;
done_testing();
