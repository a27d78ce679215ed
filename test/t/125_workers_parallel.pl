# Workers of one source in parallel (issue #12): each writes its own stripe
# of ad_stats_minute and does not wait for another's uncommitted claims of
# the same event ids; a batch that took such a claim as a duplicate commits
# it as one only once that claim has committed, fails and is retried if it
# rolled back, and sets the event aside (adstream.set_aside) if it is still
# running: a later batch judges it again.  Batches here are made to roll
# back after their claims are visible to the other workers (a trigger on
# dedup_log fails some of them), with many duplicates across partitions:
# every count must still equal the truth (AdstreamTest::wait_consumed waits
# until nothing is set aside).
# With a sink too, each worker writes its own stripe.  And the retention job takes
# the expiry lock only when expiry has something to give up.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;
use Time::HiRes;

my $broker = AdstreamTest::Broker->start(topics => [ 'ads:8', 'more:8', 'adstream.ad_stats:2', 'adstream.attributed_orders:1' ]);
my $node = AdstreamTest::node('workers_parallel', 'adstream.batch_max_messages' => 2000);

# 1. Four workers, 30% duplicates (mostly of events on other partitions).
$node->safe_psql('postgres',
	"SELECT adstream.create_source('s', '$broker->{bootstrap}', 'ads', options => '{\"workers\": 4}')");
my $r1 = AdstreamTest::loadgen($broker, topic => 'ads', count => 40000, seed => 31, args => [ '--dup-ratio', 0.3 ]);
AdstreamTest::wait_consumed($node, 's', $r1->{sent});
AdstreamTest::check_truth($node, [ $r1->{truth} ], 'four workers');
is($node->safe_psql('postgres', 'SELECT string_agg(DISTINCT stripe::text, \',\' ORDER BY stripe::text) FROM adstream.ad_stats_minute'),
	'0,1,2,3', 'each of the four workers wrote its own stripe');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM (SELECT 1 FROM adstream.ad_stats_minute GROUP BY ad_id, window_start, source_id
		   HAVING count(*) > 1) d} ) > 0 ? 'yes' : 'no',
	'yes', 'an (ad, minute) has rows in several stripes');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM (
		    (SELECT ad_id, window_start, impressions, clicks FROM adstream.ad_stats('-infinity', 'infinity', 'minute')
		     EXCEPT
		     SELECT ad_id, window_start, sum(impressions)::bigint, sum(clicks)::bigint FROM adstream.ad_stats_minute
		      GROUP BY 1, 2)) d}),
	'0', 'ad_stats() sums the stripes');

# 2. Batches that roll back after claiming: half of the dedup_log inserts
# fail, 1 s after the claims, for a while (20 of them: with fewer and shorter
# windows, no other batch met one in a CI run).  Their claims were in the index,
# uncommitted, while the other workers judged their duplicates: those
# batches must fail too and be retried.
$node->safe_psql('postgres', q{
CREATE SEQUENCE public.failures;
CREATE FUNCTION public.fail_some() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF random() < 0.5 AND nextval('public.failures') <= 20 THEN
		PERFORM pg_sleep(1);	-- the claims stay uncommitted meanwhile
		RAISE EXCEPTION 'injected failure after the claims';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER fail_some BEFORE INSERT ON adstream.dedup_log FOR EACH ROW EXECUTE FUNCTION public.fail_some();
});
my $r2 = AdstreamTest::loadgen($broker, topic => 'ads', count => 40000, seed => 32, args => [ '--dup-ratio', 0.3 ]);
# While the failing batches sleep on their claims, the others set aside the
# events whose ids those hold: sample how many wait (the 1 s windows).
my $max_aside = 0;
for (1 .. 600)
{
	my ($n, $done) = split /\|/, $node->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM adstream.set_aside), "
		  . "(SELECT coalesce(sum(next_offset), 0) >= $r1->{sent} + $r2->{sent} FROM adstream.offsets WHERE source = 's')");
	$max_aside = $n if $n > $max_aside;
	last if $done eq 't';
	Time::HiRes::sleep(0.05);
}
AdstreamTest::wait_consumed($node, 's', $r1->{sent} + $r2->{sent});
AdstreamTest::check_truth($node, [ $r1->{truth}, $r2->{truth} ], 'after batches rolled back after claiming');
cmp_ok($node->safe_psql('postgres', q{SELECT last_value FROM public.failures}), '>', 0,
	'some batches rolled back after claiming');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
my $injected = () = $log =~ /injected failure after the claims/g;
my $confirmed = () = $log =~ /a batch that held some of this batch's event ids rolled back/g;
note("batches failed by the trigger: $injected; batches failed because a claim they took as a duplicate rolled back: $confirmed; "
	  . "most events set aside at once: $max_aside");
cmp_ok($injected, '>', 0, 'the injected failures happened');
cmp_ok($max_aside, '>', 0, 'events whose ids a running batch held were set aside (and then counted: the truth above)');
$node->safe_psql('postgres', 'DROP TRIGGER fail_some ON adstream.dedup_log');

# 3. With a sink too, each worker writes its own stripe (and queues its
# rows in the outbox): the published versions are drawn as records are
# read, so no shared row orders them.  Pinot's view must equal the tables.
$node->safe_psql('postgres', "SELECT adstream.create_sink('pinot', '$broker->{bootstrap}')");
$node->safe_psql('postgres',
	"SELECT adstream.create_source('t', '$broker->{bootstrap}', 'more', options => '{\"workers\": 4}')");
my $r3 = AdstreamTest::loadgen($broker, topic => 'more', count => 20000, seed => 33, args => [ '--dup-ratio', 0.3 ]);
AdstreamTest::wait_consumed($node, 't', $r3->{sent});
is($node->safe_psql('postgres',
		q{SELECT string_agg(DISTINCT m.stripe::text, ',' ORDER BY m.stripe::text) FROM adstream.ad_stats_minute m
		   JOIN adstream.sources s ON s.id = m.source_id WHERE s.name = 't'}),
	'0,1,2,3', 'with a sink, each worker writes its own stripe');
AdstreamTest::check_truth($node, [ $r1->{truth}, $r2->{truth}, $r3->{truth} ], 'both sources');
AdstreamTest::wait_published($node);
AdstreamTest::check_pinot($node, $broker, 'four workers with a sink', orders => 0);

# 4. The retention job takes the expiry lock, which waits for every batch in
# flight and holds back new ones, only when expiry has something to give up.
use Time::HiRes qw(time);
$node->safe_psql('postgres', 'SELECT adstream.expire_dedup_state()');	# whatever was due
is($node->safe_psql('postgres', 'SELECT adstream._dedup_expiry_due()'), 'f',
	'right after expiry, expiry has nothing to do');
my ($in, $out, $err) = ('', '', '');
my $holder = IPC::Run::start([ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN;\nSELECT adstream._lock('adstream.dedup_expiry', 0, false);\nSELECT 'held';\n";
$holder->pump until $out =~ /held/;
my $t0 = time();
$node->safe_psql('postgres', 'SELECT adstream.drop_expired_partitions()');
cmp_ok(time() - $t0, '<', 1.5, 'with nothing to expire, retention does not wait for a batch holding the expiry lock');
# Something to expire: a partition of t read far ahead moves t's mark.
$node->safe_psql('postgres',
	q{UPDATE adstream.offsets SET max_event_ts = now() + interval '3 hours' WHERE source = 't' AND partition = 0});
is($node->safe_psql('postgres', 'SELECT adstream._dedup_expiry_due()'), 't', 'then expiry has work');
my ($rc, $stdout, $stderr) = $node->psql('postgres', 'SELECT adstream.drop_expired_partitions()');
like($stderr, qr/lock timeout/, 'and retention waits for the expiry lock (here until its lock_timeout)');
$in .= "ROLLBACK;\n\\q\n";
$holder->finish;

done_testing();
