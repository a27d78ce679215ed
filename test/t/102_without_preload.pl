# The extension in a server that does not preload it: its SQL objects and
# the parsers work, and the workers' functions say what is missing.  (0.3
# defined a PGC_POSTMASTER setting whenever the library was loaded, which
# ended the session that first loaded it outside shared_preload_libraries.)
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->start;
my ($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION adstream');
is($rc, 0, 'CREATE EXTENSION works without shared_preload_libraries') or diag $err;
is($node->safe_psql('postgres', q{SELECT reason FROM adstream.validate_event('{"event_id": "x"}')}), 'invalid_uuid',
	'the parser answers from SQL');
($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM adstream.dedup_index_status()');
like($err, qr/not in shared memory.*\n.*HINT:.*shared_preload_libraries/s,
	'the dedup index says it needs shared_preload_libraries');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is still up');
$node->stop;
done_testing();
