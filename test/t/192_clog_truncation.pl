# An abandoned dedup claim is never judged committed, however many
# transactions later (issue #11, case 2).
#
# A worker ended by FATAL in the middle of a batch (pause_source under load)
# leaves the ids its batch claimed in the shared dedup index.  0.4 took such
# an entry for a committed one once clog had been truncated past its
# transaction, so the same events, read again after the pause, were
# duplicates: lost, without a dead letter.  Here the batch is held between
# its claims and its dedup_log insert (a lock on dedup_log), the source is
# paused, more than a clog segment of transactions is burnt and every
# database frozen, so that clog really is truncated, and the source resumed.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => ['burn:1']);
my $node = AdstreamTest::node('clog', autovacuum => 'off');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub produce
{
	my ($from, $n) = @_;
	my $ts = int(time() * 1000) - 60_000;
	my $in = join('', map {
		sprintf(qq({"event_id":"00000000-0000-4000-8000-%012d","type":"click","ad_id":%d,"campaign_id":1,"user_id":1,"store_id":1,"ts":%d}\n),
			$_, $_, $ts) } $from .. $from + $n - 1);
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'burn', '-p', 0 ], \$in)
	  or die 'kcat failed';
}

sql("SELECT adstream.create_source('burn', '$broker->{bootstrap}', 'burn')");
produce(1, 10);
AdstreamTest::wait_consumed($node, 'burn', 10);

# Hold the next batch between its claims and its dedup_log insert.
my ($in, $out, $err) = ('', '', '');
my $lock = IPC::Run::start([ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN;\nLOCK TABLE adstream.dedup_log IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n";
$lock->pump until $out =~ /locked/;
produce(11, 15);
$node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'adstream consumer' AND wait_event_type = 'Lock'})
  or die 'the batch did not block';
is(sql('SELECT entries FROM adstream.dedup_index_status()'), 25, 'the held batch has claimed its 15 ids');

sql("SELECT adstream.pause_source('burn')");
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'adstream consumer'})
  or die 'the worker did not exit';
$in .= "ROLLBACK;\n\\q\n";
$lock->finish;
is(sql('SELECT entries FROM adstream.dedup_index_status()'), 10,
	'the worker ended in the middle of its batch withdrew its claims on the way out');

# Burn more than a clog segment (1,048,576 transactions), then freeze every
# database so that clog is truncated past the abandoned transaction.
my $xid0 = sql('SELECT txid_current()');
my $script = PostgreSQL::Test::Utils::tempdir() . '/burn.sql';
PostgreSQL::Test::Utils::append_to_file($script, "SELECT txid_current();\n");
my ($pb_out, $pb_err) = ('', '');
IPC::Run::run([ 'pgbench', '-n', '-c', 2, '-j', 2, '-t', 560_000, '-f', $script, '-d', $node->connstr('postgres') ],
	'>', \$pb_out, '2>', \$pb_err) or die "pgbench failed: $pb_err";
cmp_ok(sql('SELECT txid_current()') - $xid0, '>', 1_048_576, 'more than a clog segment of transactions burnt');
sql(q{UPDATE pg_database SET datallowconn = true WHERE datname = 'template0'});
for my $db (qw(template0 template1 postgres))
{
	$node->safe_psql($db, 'VACUUM (FREEZE)');
}
sql(q{UPDATE pg_database SET datallowconn = false WHERE datname = 'template0'});
$node->safe_psql('postgres', 'VACUUM (FREEZE)');
ok(!grep({ $_ eq '0000' } split /\n/, sql(q{SELECT pg_ls_dir('pg_xact')})), 'clog is truncated past the abandoned batch');

sql("SELECT adstream.resume_source('burn')");
AdstreamTest::wait_consumed($node, 'burn', 25);
is(sql(q{SELECT accepted || '/' || duplicates || '/' || rejected FROM adstream.offsets WHERE source = 'burn'}), '25/0/0',
	'every event of the abandoned batch counts once after the resume');
is(sql('SELECT sum(clicks) FROM adstream.ad_stats_minute'), 25, '25 clicks');

$node->stop;
$broker->stop;
done_testing();
