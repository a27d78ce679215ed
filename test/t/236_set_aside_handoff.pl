# Events set aside move with their partition (review of e4ad032):
# export_partitions takes them out of adstream.set_aside into the handoff,
# import_partitions puts them back on the receiving node (through jsonb, the
# message value included), whose worker judges them once; cancel_handoff
# brings them back to the exporting node.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;

my $broker = AdstreamTest::Broker->start(topics => [ 'aside:2' ]);
my %node;
for my $name (qw(A C))
{
	$node{$name} = AdstreamTest::node("aside_$name");
	$node{$name}->safe_psql('postgres', "SELECT adstream.set_node_name('$name')");
}
my ($A, $C) = @node{qw(A C)};
my $now = time();

sub event
{
	my ($n) = @_;
	return sprintf(qq({"event_id":"00000000-0000-4000-8000-%012d","type":"click","ad_id":7,"campaign_id":1,"user_id":1,"store_id":1,"ts":%d}\n),
		$n, ($now - 10) * 1000);
}

sub produce
{
	my ($partition, @events) = @_;
	my $in = join('', @events);
	IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', 'aside', '-p', $partition ], \$in)
	  or die 'kcat failed';
}

sub copy_handoff
{
	my ($from, $to, $id) = @_;
	my ($e1, $e2) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $from->connstr('postgres'), '-c',
			"COPY (SELECT * FROM adstream.handoff_data($id)) TO STDOUT" ], '2>', \$e1, '|',
		[ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $to->connstr('postgres'), '-c',
			'COPY adstream.handoff_in FROM STDIN' ], '>', \my $o, '2>', \$e2)
	  or die "copying handoff $id failed: $e1 $e2";
}

my $insert_aside = q{
INSERT INTO adstream.set_aside (source_id, partition, "offset", event_id, type, ad_id, campaign_id, user_id, store_id, ts, payload)
SELECT id, 1, 0, '00000000-0000-4000-8000-000000000003', 'click', 7, 1, 1, 1, now() - interval '10 s', '\x7b22223a307d'
  FROM adstream.sources WHERE name = 's';
};

$A->safe_psql('postgres', "SELECT adstream.create_source('s', '$broker->{bootstrap}', 'aside', options => '{\"workers\": 2}')");
produce(0, event(1));
produce(1, event(2));
AdstreamTest::wait_consumed($A, 's', 2);
$A->safe_psql('postgres', "SELECT adstream.pause_source('s')");
$A->poll_query_until('postgres', q{SELECT count(*) = 0 FROM adstream.worker_status() WHERE pid IS NOT NULL})
  or die 'workers did not stop';
$A->safe_psql('postgres', $insert_aside);

# Exported and cancelled: back on A, unchanged.
my $hid = $A->safe_psql('postgres', "SELECT adstream.export_partitions('1')");
is($A->safe_psql('postgres', 'SELECT count(*) FROM adstream.set_aside'), '0', 'the export takes the event set aside');
$A->safe_psql('postgres', "SELECT adstream.cancel_handoff($hid)");
is($A->safe_psql('postgres', q{SELECT format('%s:%s:%s:%s', partition, "offset", type, encode(payload, 'hex')) FROM adstream.set_aside}),
	'1:0:click:7b22223a307d', 'a cancelled handoff brings it back as it was');

# Exported and imported on C: judged there, once.
$hid = $A->safe_psql('postgres', "SELECT adstream.export_partitions('1')");
copy_handoff($A, $C, $hid);
$C->safe_psql('postgres', "SELECT adstream.import_partitions('A', $hid)");
$A->safe_psql('postgres', "SELECT adstream.confirm_handoff($hid)");
AdstreamTest::wait_consumed($C, 's', 1);
is($C->safe_psql('postgres', q{SELECT format('%s/%s/%s', partition, accepted, duplicates) FROM adstream.offsets WHERE source = 's'}),
	'1/2/0', 'C judges the event set aside: counted once, with its partition');
is($A->safe_psql('postgres', 'SELECT count(*) FROM adstream.set_aside'), '0', 'A has no event set aside left');

$A->stop;
$C->stop;
$broker->stop;
done_testing();
