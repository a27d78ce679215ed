# Runs the pgTAP suites in test/pgtap/ with pg_prove against a fresh server
# that preloads adstream (its workers run in database "postgres", where the
# suites run too; every suite rolls back, so no source or sink is ever
# committed).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $testdir = $ENV{TESTDIR} || '.';
my @suites = sort glob("$testdir/test/pgtap/*.sql");
plan skip_all => "no pgTAP suites in $testdir/test/pgtap" unless @suites;

my $pg_prove = `command -v pg_prove 2>/dev/null`;
chomp $pg_prove;
# CI must run the suites: a missing pg_prove there is a failure, not a skip.
if (!$pg_prove)
{
	BAIL_OUT('pg_prove is not installed (Debian: libtap-parser-sourcehandler-pgtap-perl)') if $ENV{CI};
	plan skip_all => 'pg_prove is not installed';
}

my $node = PostgreSQL::Test::Cluster->new('pgtap');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'adstream'
adstream.database = 'postgres'
max_worker_processes = 32
});
$node->start;

my ($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE EXTENSION pgtap');
is($ret, 0, 'CREATE EXTENSION pgtap') or diag($stderr);
($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE EXTENSION adstream');
is($ret, 0, 'CREATE EXTENSION adstream') or diag($stderr);
# The suites check the newest schema: the default version must be installed
# (by its install script or through the update path from 0.1).
is( $node->safe_psql(
		'postgres',
		"SELECT e.extversion = a.default_version FROM pg_extension e "
		  . "JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'adstream'"),
	't',
	'the default version of adstream is installed');

# pg_prove exits non-zero when any assertion fails or a plan is not met.
my @cmd = (
	$pg_prove, '--verbose', '--failures',
	'-h', $node->host, '-p', $node->port, '-d', 'postgres',
	@suites);
my ($out, $err) = ('', '');
my $rc = IPC::Run::run(\@cmd, '>', \$out, '2>', \$err) ? 0 : $?;
if (is($rc, 0, 'pg_prove ' . join(' ', map { s{^\Q$testdir\E/}{}r } @suites)))
{
	note($out);
}
else
{
	diag("pg_prove exit status $rc\n$out$err");
}

# The suites must leave nothing behind.
is($node->safe_psql('postgres', 'SELECT count(*) FROM adstream.sources'),
	'0', 'no sources left behind');
is( $node->safe_psql(
		'postgres',
		'SELECT (SELECT count(*) FROM adstream.sinks) + (SELECT count(*) FROM adstream.outbox)'),
	'0',
	'no sinks or outbox rows left behind');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tap\\_adstream\\_%'"),
	'0',
	'no test roles left behind');
is( $node->safe_psql(
		'postgres',
		"SELECT (SELECT count(*) FROM adstream.orders) + (SELECT count(*) FROM adstream.attributed_orders) "
		  . "+ (SELECT count(*) FROM adstream.rollup_pending) + (SELECT count(*) FROM adstream.ad_stats_hour) "
		  . "+ (SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent "
		  . "WHERE c.relnamespace = 'adstream'::regnamespace)"),
	'0',
	'no orders, credits, rollups or partitions left behind');

$node->stop;
done_testing();
