# Events set aside move with their partition (review of e4ad032):
# export_partitions takes them out of adstream.set_aside into the handoff,
# import_partitions puts them back on the receiving node (through jsonb, the
# message value included), whose worker judges them once; cancel_handoff
# brings them back to the exporting node.
use strict;
use warnings;
use lib 'test/perl';
use AdstreamTest;
use AdstreamSetAside;
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
my $sa = AdstreamSetAside->new(broker => $broker, node => $A);

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

$sa->create_source;
$sa->read_one_each(type => 'click');
$sa->pause;
$sa->insert_set_aside(type => 'click', payload => '\x7b22223a307d');

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
