# Input formats against a real server, the embedded broker and ground truth:
# JSON in a producer's own shape (a field mapping) with ts in milliseconds,
# microseconds and RFC 3339; Avro in the Confluent wire format with schemas
# from a schema registry stand-in on loopback (test/formats/schema_registry.pl).
# Broken records are dead-lettered with the right reasons; a registry outage
# delays the Avro source and loses nothing; bad definitions are refused.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $BIN = $AdstreamTest::BIN;
my $tmp = PostgreSQL::Test::Utils::tempdir();
my $broker = AdstreamTest::Broker->start(topics => [ 'fj_ms:2', 'fj_us:2', 'fj_rfc:2', 'fa:2', 'fr:2', 'om_ads:2', 'om_orders:2' ]);
# dead letters kept whole, so that they can be re-driven (section 5); orders
# judged at the latest 20 s after they arrive (section 6)
my $node = AdstreamTest::node('formats', 'adstream.dead_letter_payload_bytes' => 65536,
	'adstream.attribution_max_wait' => "'20s'");

my $MAP = '{"event_id": "eventId", "type": "kind", "ad_id": "payload.ad.id", '
  . '"campaign_id": "payload.ad.campaign", "user_id": "user.id", "store_id": "storeId", "ts": "time"}';

sub run_ok
{
	my (@cmd) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err) or die "@cmd failed: $err";
	return $out;
}

# Generates COUNT valid-or-duplicate-or-late-or-future events (the loadgen's
# truth), re-writes them in the producer's shape, adds the hand-made broken
# records, produces both; returns (truth files, messages sent).
sub produce
{
	my (%o) = @_;
	my $base = "$tmp/$o{topic}-$o{seed}";
	run_ok("$BIN/adstream-loadgen", '--dry-run', '--partitions', 2, '--topic', $o{topic},
		'--count', $o{count}, '--seed', $o{seed}, '--bad-ratio', 0, '--start-ms', $AdstreamTest::START_MS,
		'--max-bytes', 65536, '--dump', "$base.dump", '--truth', "$base.truth");
	my @fmt = ('--format', $o{format}, '--ts-format', $o{ts_format}, '--schema-id', $o{schema_id} // 1);
	run_ok("$BIN/adstream-transcode", '--in', "$base.dump", '--out', "$base.out", @fmt);
	run_ok("$BIN/adstream-transcode", '--bad-out', "$base.bad", '--bad-truth', "$base.badtruth", @fmt);
	my $sent = 0;
	for my $f ("$base.out", "$base.bad")
	{
		my $out = run_ok("$BIN/adstream-loadgen", '--brokers', $broker->{bootstrap}, '--topic', $o{topic},
			'--replay', $f);
		$out =~ /sent=(\d+)/ or die "no replay summary: $out";
		$sent += $1;
	}
	return ([ "$base.truth", "$base.badtruth" ], $sent);
}

sub create_error
{
	my ($kind, $options) = @_;
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT adstream.create_source('bad', '$broker->{bootstrap}', 'nowhere', '$kind', '$options')");
	return $rc == 0 ? '' : $err;
}

# 1. Definitions are checked when the source is created.
like(create_error('ad_events', '{"fields": {"ad_id": "a.b", "campaign_id": "a.b.c"}}'),
	qr/invalid field mapping: .*inside.*\n.*HINT/s, 'a path inside another field\'s path is refused, with a hint');
like(create_error('ad_events', '{"fields": {"ad": "x"}}'), qr/"ad" is not a field of the ad events contract/,
	'an unknown contract field is refused');
like(create_error('ad_events', '{"fields": {"ad_id": "a..b"}}'), qr/empty member name/, 'an empty member name is refused');
like(create_error('ad_events', '{"fields": {"ad_id": 5}}'), qr/must be a JSON object of strings/, 'a path must be a string');
like(create_error('ad_events', '{"ts_format": "epoch_ns"}'), qr/unknown ts_format/, 'an unknown ts_format is refused');
like(create_error('ad_events', '{"format": "avro"}'), qr/needs option "schema_registry"/, 'avro needs a registry');
like(create_error('ad_events', '{"format": "avro", "schema_registry": "file:///etc/passwd"}'),
	qr/invalid value for option "schema_registry"/, 'the registry URL must be http(s)');
like(create_error('orders', '{"format": "avro", "schema_registry": "http://r:8081"}'), qr/not supported for sources of kind "orders"/,
	'avro orders are refused');
like(create_error('ad_events', '{"schema_registry": "http://r:8081"}'), qr/applies only to format "avro"/,
	'a registry without avro is refused');
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.sources"), 0, 'no source was created by the refusals');

# 2. JSON in the producer's shape, ts in ms, us and RFC 3339.
my @truths;
my %sent;
for my $s ([ 'fj_ms', 'epoch_ms', 11 ], [ 'fj_us', 'epoch_us', 12 ], [ 'fj_rfc', 'rfc3339', 13 ])
{
	my ($topic, $ts, $seed) = @$s;
	$node->safe_psql('postgres', "SELECT adstream.create_source('$topic', '$broker->{bootstrap}', '$topic', "
		  . "options => '{\"fields\": $MAP, \"ts_format\": \"$ts\"}')");
	my ($t, $n) = produce(topic => $topic, seed => $seed, count => 4000, format => 'json', ts_format => $ts);
	push @truths, @$t;
	$sent{$topic} = $n;
}
is($node->safe_psql('postgres', "SELECT input_format->>'ts_format' FROM adstream.sources WHERE name = 'fj_us'"),
	'epoch_us', 'the input format is stored with the source');
AdstreamTest::wait_consumed($node, $_, $sent{$_}) for sort keys %sent;
AdstreamTest::check_truth($node, \@truths, 'mapped JSON (ms, us, RFC 3339)');
like($node->safe_psql('postgres', "SELECT detail FROM adstream.rejected_events WHERE source = 'fj_us' AND reason = 'duplicate_key'"),
	qr/duplicate field "payload"/, 'details name the producer\'s paths');

# 3. Avro with a schema registry that is down when the records arrive.
my $regdir = "$tmp/registry";
mkdir $regdir or die;
run_ok("$BIN/adstream-transcode", '--write-schema', "$regdir/1.avsc");
sub start_registry
{
	my ($port) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'perl', 'test/formats/schema_registry.pl', $regdir, $port // 0 ],
		'>', \$out, '2>', \$err);
	my $deadline = time() + 20;
	$h->pump while $out !~ /^PORT (\d+)/m && time() < $deadline;
	$out =~ /^PORT (\d+)/m or die "registry did not start: $err";
	return ($h, $1);
}
my ($reg, $port) = start_registry();
$reg->kill_kill;
$reg->finish;

$node->safe_psql('postgres', "SELECT adstream.create_source('fa', '$broker->{bootstrap}', 'fa', "
	  . "options => '{\"format\": \"avro\", \"schema_registry\": \"http://reader:pw-secret\@127.0.0.1:$port\", "
	  . "\"schema_registry_timeout_ms\": 1000, \"fields\": $MAP, \"ts_format\": \"epoch_us\"}')");
my ($ta, $na) = produce(topic => 'fa', seed => 14, count => 4000, format => 'avro', ts_format => 'epoch_us');
push @truths, @$ta;

$node->poll_query_until('postgres', "SELECT count(*) > 0 FROM adstream.worker_status() w "
	  . "JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'fa' AND w.state = 'registry_wait' AND w.last_error LIKE '%waits for its schema%'")
  or die 'the outage is not reported';
pass('a registry outage shows in worker_status');
like($node->safe_psql('postgres', "SELECT string_agg(last_error, ' ') FROM adstream.worker_status() w "
	  . "JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'fa'"),
	qr{http://\*\*\*\@127\.0\.0\.1:$port/schemas/ids/1(?!.*pw-secret)}, 'the error names the registry without its credentials');
# (the TAP server logs every statement, create_source's included: look at adstream's own lines)
my @waits = grep { /adstream source "fa"/ } split /^/, slurp_file($node->logfile);
ok(@waits > 0 && !grep({ /pw-secret/ } @waits), 'and so do its lines in the log');
sleep 2;
is($node->safe_psql('postgres', "SELECT coalesce(sum(next_offset), 0) || ' ' || "
	  . "(SELECT count(*) FROM adstream.rejected_events WHERE source = 'fa') FROM adstream.offsets WHERE source = 'fa'"),
	'0 0', 'during the outage nothing is committed and nothing is dead-lettered');

# A restart while records are held: they are read again from the stored offsets.
$node->restart;
$node->poll_query_until('postgres', "SELECT count(*) > 0 FROM adstream.worker_status() w "
	  . "JOIN adstream.sources s ON s.id = w.source_id WHERE s.name = 'fa' AND w.state = 'registry_wait'")
  or die 'the outage is not reported after a restart';
is($node->safe_psql('postgres', "SELECT coalesce(sum(next_offset), 0) FROM adstream.offsets WHERE source = 'fa'"),
	'0', 'after a restart during the outage the records wait again');

($reg, $port) = start_registry($port);
AdstreamTest::wait_consumed($node, 'fa', $na);
AdstreamTest::check_truth($node, \@truths, 'Avro after a registry outage, and mapped JSON');
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.rejected_events WHERE source = 'fa' "
	  . "AND reason = 'unknown_schema' AND detail LIKE '%4242%'"), 1, 'an unknown schema id is dead-lettered, naming it');

open(my $log, '<', "$regdir/requests.log") or die;
my @req = <$log>;
close $log;
my $asked1 = grep { m{/schemas/ids/1 200} } @req;
is($asked1, 1, 'schema 1 was fetched once and then served from the cache');

# 4. A restart keeps the count exact: nothing is read twice.
$node->restart;
my ($t2, $n2) = produce(topic => 'fa', seed => 15, count => 1000, format => 'avro', ts_format => 'epoch_us');
push @truths, @$t2;
AdstreamTest::wait_consumed($node, 'fa', $na + $n2);
AdstreamTest::check_truth($node, \@truths, 'Avro after a server restart');

# 5. Re-drive: a source created with the wrong definition dead-letters a
# whole stream; after the fix, re-driving its dead letters gives exactly the
# counts it would have had, and a second re-drive changes nothing.
$node->safe_psql('postgres', "SELECT adstream.create_source('fr', '$broker->{bootstrap}', 'fr')");
my ($tr, $nr) = produce(topic => 'fr', seed => 16, count => 3000, format => 'json', ts_format => 'epoch_ms');
AdstreamTest::wait_consumed($node, 'fr', $nr);
is($node->safe_psql('postgres', "SELECT count(*) FROM adstream.rejected_events WHERE source = 'fr'"),
	$nr, 'under the wrong definition every message is a dead letter');
is($node->safe_psql('postgres', "SELECT requested || ' ' || truncated FROM adstream.redrive_dead_letters('fr', ARRAY['no_such_reason'])"),
	'0 0', 'a re-drive of a reason nobody has marks nothing');

# The fix (what alter_source does): the definition, and a new generation, which restarts the workers.
$node->safe_psql('postgres', "UPDATE adstream.sources SET input_format = adstream._input_format('ad_events', '{\"fields\": $MAP}'), "
	  . "generation = adstream._new_generation() WHERE name = 'fr'; SELECT adstream._wake_launcher()");
my $marked = $node->safe_psql('postgres', "SELECT requested || ' ' || truncated FROM adstream.redrive_dead_letters('fr')");
is($marked, "$nr 0", 'every dead letter of the source is marked, none was cut short');
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM adstream.rejected_events WHERE redrive_generation IS NOT NULL")
  or die 'the re-drive did not finish';
push @truths, @$tr;
AdstreamTest::check_truth($node, \@truths, 'after re-driving a stream judged under the wrong definition');

$marked = $node->safe_psql('postgres', "SELECT requested FROM adstream.redrive_dead_letters('fr')");
cmp_ok($marked, '>', 0, "a second re-drive marks the $marked remaining dead letters");
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM adstream.rejected_events WHERE redrive_generation IS NOT NULL")
  or die 'the second re-drive did not finish';
AdstreamTest::check_truth($node, \@truths, 'after a second re-drive (nothing counted twice)');

# A payload kept in part cannot be re-driven, and says so.
$node->safe_psql('postgres', "ALTER SYSTEM SET adstream.dead_letter_payload_bytes = 16; SELECT pg_reload_conf()");
sleep 1;
my $t0 = $node->safe_psql('postgres', 'SELECT now()');
AdstreamTest::replay($broker, 'fr', [ [ 0, '{"not": "an event of this source, and longer than 16 bytes"}' ] ]);
AdstreamTest::wait_consumed($node, 'fr', $nr + 1);
is($node->safe_psql('postgres', "SELECT requested || ' ' || truncated FROM adstream.redrive_dead_letters('fr', ARRAY['missing_field'], '$t0')"),
	'0 1', 'a dead letter kept in part is counted as truncated, not marked');
open(my $extra, '>', "$tmp/truncated.truth") or die;
print $extra "reject,missing_field,1\ntotal,rejected,1\n";
close $extra;
push @truths, "$tmp/truncated.truth";

# 6. Orders in a producer's shape, credited to the clicks of a mapped events source.
my $OMAP = '{"order_id": "id", "user_id": "buyer.id", "store_id": "shop.id", '
  . '"amount": "total.value", "currency": "total.ccy", "ts": "at"}';
$node->safe_psql('postgres', "SELECT adstream.create_source('om_shop', '$broker->{bootstrap}', 'om_orders', 'orders', "
	  . "'{\"fields\": $OMAP}'); SELECT adstream.create_source('om_ads', '$broker->{bootstrap}', 'om_ads', "
	  . "options => '{\"fields\": $MAP}')");
my $ob = "$tmp/om";
run_ok("$BIN/adstream-loadgen", '--dry-run', '--partitions', 2, '--topic', 'om_ads', '--count', 3000, '--seed', 17,
	'--bad-ratio', 0, '--start-ms', $AdstreamTest::START_MS, '--max-bytes', 65536, '--users', 300, '--stores', 20,
	'--orders-topic', 'om_orders', '--orders', 1000, '--orders-partitions', 2, '--orders-bad-ratio', 0,
	'--dump', "$ob.dump", '--truth', "$ob.truth");
run_ok("$BIN/adstream-transcode", '--in', "$ob.dump", '--out', "$ob.events", '--orders-out', "$ob.orders",
	'--format', 'json', '--ts-format', 'epoch_ms');
sub replay_file
{
	my ($topic, $file, $source) = @_;
	my $out = run_ok("$BIN/adstream-loadgen", '--brokers', $broker->{bootstrap}, '--topic', $topic, '--replay', $file);
	my ($n) = $out =~ /sent=(\d+)/ or die "no replay summary: $out";
	AdstreamTest::wait_consumed($node, $source, $n);
}
replay_file('om_ads', "$ob.events", 'om_ads');
push @truths, "$ob.truth";
# (before the orders: check_truth's counters are those of every source)
AdstreamTest::check_truth($node, \@truths, 'with a mapped events source feeding attribution');
replay_file('om_orders', "$ob.orders", 'om_shop');
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM adstream.waiting_orders') or die 'orders still waiting';
AdstreamTest::check_orders($node, [ "$ob.truth" ], 'om_shop', 'orders in a producer\'s shape');
cmp_ok($node->safe_psql('postgres', "SELECT count(*) FROM adstream.orders WHERE source = 'om_shop' AND event_id IS NOT NULL"),
	'>', 0, 'some of them are credited to clicks');

$reg->kill_kill;
$reg->finish;
$broker->stop;
done_testing();
