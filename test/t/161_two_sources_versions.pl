# Pinot's record of an (ad, minute) counted by two sources ends equal to the
# database: versions rise in the order records are read, not in outbox id
# order.
#
# Found by review: a published version was the outbox id, taken in the batch
# and not at its commit, and two *sources* write one Pinot key
# (node|ad|minute) through two rows of ad_stats_minute, so nothing ordered
# their ids.  Batch T1 (source a) took outbox id n and committed late; batch
# T2 (source b) took n+1 and committed first; the publisher sent n+1 with the
# value it read then (without T1), and later n with the full value, which
# Pinot discarded (a lower version).  Now the publisher draws each record's
# version from the ids' sequence as it reads the record's value.
#
# A test trigger on adstream.outbox stalls T1 (source a's worker) for 4 s
# right after its outbox insert.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'ev_a:1', 'ev_b:1' ]);
my $node = AdstreamTest::node('twosrc');
sub sql { return $node->safe_psql('postgres', $_[0]); }

my $minute_ms = (int(time() / 60) - 10) * 60000;
sub event
{
	my ($n) = @_;
	return sprintf('{"event_id": "00000000-0000-4000-8000-%012d", "type": "impression", "ad_id": 7, '
		  . '"campaign_id": 2, "user_id": 3, "store_id": 4, "ts": %d}', $n, $minute_ms + 1000 * $n);
}

# What Pinot's upsert table holds for ad 7 (impressions, version).
sub pinot
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$AdstreamTest::BIN/adstream-upsert-reader", '--brokers', $broker->{bootstrap},
			'--topic', 'adstream.ad_stats' ], '>', \$out, '2>', \$err)
	  or die "upsert reader failed: $err";
	my ($line) = grep { /"ad_id": ?7\b/ } split /\n/, $out;
	return '' unless $line;
	my ($imp) = $line =~ /"impressions": ?(\d+)/;
	my ($ver) = $line =~ /"version": ?(\d+)/;
	return "$imp v$ver";
}

sql("SELECT adstream.set_node_name('n1')");
sql("SELECT adstream.create_sink('pinot', '$broker->{bootstrap}')");
sql("SELECT adstream.create_source('a', '$broker->{bootstrap}', 'ev_a')");
sql("SELECT adstream.create_source('b', '$broker->{bootstrap}', 'ev_b')");

AdstreamTest::replay($broker, 'ev_a', [ [ 0, event(1) ] ]);
AdstreamTest::wait_consumed($node, 'a', 1);
AdstreamTest::wait_published($node);
like(pinot(), qr/^1 v/, 'Pinot has the first impression');

sql(q{
CREATE TABLE public.review_stall_flag (x int);
CREATE FUNCTION public.review_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF current_setting('application_name') LIKE 'adstream consumer a %'
	   AND EXISTS (SELECT 1 FROM public.review_stall_flag) AND EXISTS (SELECT 1 FROM new_rows WHERE ad_id = 7) THEN
		PERFORM pg_sleep(4);
	END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER review_stall AFTER INSERT ON adstream.outbox REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION public.review_stall();
INSERT INTO public.review_stall_flag VALUES (1);
});

# T1: source a's batch, stalled after its outbox insert.
AdstreamTest::replay($broker, 'ev_a', [ [ 0, event(2) ] ]);
$node->poll_query_until('postgres', q{SELECT EXISTS (SELECT 1 FROM pg_stat_activity
	WHERE application_name LIKE 'adstream consumer a %' AND wait_event = 'PgSleep')})
  or die 'source a\'s batch did not reach the stall';
sql('DELETE FROM public.review_stall_flag');
# T2: source b's batch on the same (ad, minute) commits meanwhile, and is published.
AdstreamTest::replay($broker, 'ev_b', [ [ 0, event(3) ] ]);
AdstreamTest::wait_consumed($node, 'b', 1);
# T1 commits once its stall is over.
AdstreamTest::wait_consumed($node, 'a', 2);
AdstreamTest::wait_published($node);

is(sql('SELECT sum(impressions) FROM adstream.ad_stats_minute WHERE ad_id = 7'), 3,
	'the database counts the three impressions (two sources)');
like(pinot(), qr/^3 v/, 'Pinot\'s upsert view of the key equals the database (impressions and version: ' . pinot() . ')');
note sql(q{SELECT string_agg(id || ':' || txid, ' ' ORDER BY id) FROM adstream.outbox WHERE ad_id = 7});

$broker->stop;
done_testing();
