# Events set aside survive pg_dump / pg_restore (review of e4ad032):
# adstream.set_aside is an extension configuration table whose rows
# reference adstream.sources; the dump must restore them (after their
# source), and the restored node must judge them once adopted.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use AdstreamSetAside;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'aside:2' ]);
my $orig = AdstreamTest::node('aside_orig');
my $sa = AdstreamSetAside->new(broker => $broker, node => $orig);

$sa->create_source;
$sa->read_one_each;
$sa->pause;
# As a batch of worker 1 would leave it: an event below partition 1's offset.
$sa->insert_set_aside;
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
