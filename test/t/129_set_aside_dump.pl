# Events set aside survive pg_dump / pg_restore (review of e4ad032):
# adstream.set_aside is an extension configuration table whose rows
# reference adstream.sources; the dump must restore them (after their
# source), and the restored node must judge them once adopted.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'aside:2' ]);
my $orig = AdstreamTest::node('aside_orig');
my $now = time();

sub event
{
	my ($n) = @_;
	return sprintf(qq({"event_id":"00000000-0000-4000-8000-%012d","type":"impression","ad_id":7,"campaign_id":1,"user_id":1,"store_id":1,"ts":%d}\n),
		$n, ($now - 10) * 1000);
}

sub produce
{
	my ($partition, @events) = @_;
	my $in = join('', @events);
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'aside', '-p', $partition ], \$in)
	  or die 'kcat failed';
}

$orig->safe_psql('postgres', "SELECT adstream.create_source('s', '$broker->{bootstrap}', 'aside', options => '{\"workers\": 2}')");
produce(0, event(1));
produce(1, event(2));
AdstreamTest::wait_consumed($orig, 's', 2);
$orig->safe_psql('postgres', "SELECT adstream.pause_source('s')");
$orig->poll_query_until('postgres', q{SELECT count(*) = 0 FROM adstream.worker_status() WHERE pid IS NOT NULL})
  or die 'workers did not stop';
# As a batch of worker 1 would leave it: an event below partition 1's offset.
$orig->safe_psql('postgres', q{
INSERT INTO adstream.set_aside (source_id, partition, "offset", event_id, type, ad_id, campaign_id, user_id, store_id, ts, payload)
SELECT id, 1, 0, '00000000-0000-4000-8000-000000000003', 'impression', 7, 1, 1, 1, now() - interval '10 s', '\x7b7d'
  FROM adstream.sources WHERE name = 's';
});
my $dump = $orig->basedir . '/aside.dump';
command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $orig->connstr('postgres') ], 'pg_dump');
$orig->stop;

# Restored as 197_dump_restore.pl does (without the partitions' indexes).
my $copy = AdstreamTest::node('aside_copy', create_extension => 0);
my ($toc, $toc_err) = ('', '');
IPC::Run::run([ 'pg_restore', '-l', $dump ], '>', \$toc, '2>', \$toc_err) or die "pg_restore -l: $toc_err";
my $list = "$dump.list";
PostgreSQL::Test::Utils::append_to_file($list,
	join('', grep { !/^\d+; \d+ \d+ (?:CONSTRAINT|INDEX|INDEX ATTACH) adstream (?:ad_stats_minute|ad_events)_p\d/ }
		  split /^/, $toc));
command_ok([ 'pg_restore', '--exit-on-error', '-L', $list, '-d', $copy->connstr('postgres'), $dump ],
	'pg_restore into a fresh cluster');
is($copy->safe_psql('postgres', q{SELECT format('%s:%s:%s', s.name, a.partition, a."offset") FROM adstream.set_aside a JOIN adstream.sources s ON s.id = a.source_id}),
	's:1:0', 'the event set aside is restored with its source');
$copy->safe_psql('postgres', 'SELECT adstream.adopt_restored()');
$copy->safe_psql('postgres', "SELECT adstream.resume_source('s')");
AdstreamTest::wait_consumed($copy, 's', 2);
is($copy->safe_psql('postgres', q{SELECT sum(accepted) FROM adstream.offsets WHERE source = 's'}), '3',
	'and judged once by the restored node');

$copy->stop;
$broker->stop;
done_testing();
