
# AdstreamSetAside: the pieces the set-aside tests share (126_set_aside,
# 127_set_aside_start, 128_set_aside_drop, 129_set_aside_dump,
# 236_set_aside_handoff): one source 's' on a topic of two partitions,
# events with known ids, a batch of worker 0 held open on a claim, and a
# psql session that holds an advisory lock for as long as the test says.
#
#   my $sa = AdstreamSetAside->new(broker => $broker, node => $node);
#   $sa->install_hold(42);
#   $sa->create_source;
#   $sa->warm_up;                  # or read_one_each, produce(0, $sa->event(1, age => 60))
#   my $locker = AdstreamSetAside::Locker->start($node, 42);
#   $locker->lock;
#   $sa->hold_and_copy(1, 2);
#   $locker->unlock;
#   $locker->quit;

package AdstreamSetAside;

use strict;
use warnings;

use AdstreamTest ();
use IPC::Run ();

# The harness of one test: the broker, the node the source lives on (the
# exporting or dumped one where there are several), the topic and the
# source's name.  The test's clock starts here: event times are relative to
# it (now()).
sub new
{
	my ($class, %o) = @_;
	return bless {
		broker => $o{broker},
		node => $o{node},
		topic => $o{topic} // 'aside',
		source => $o{source} // 's',
		now => time(),
	}, $class;
}

# The time (epoch seconds) the harness was made; events are $age before it.
sub now { return $_[0]->{now}; }

# Runs $q on the node (database postgres) and returns its output; dies on an error.
sub sql { my ($self, $q) = @_; return $self->{node}->safe_psql('postgres', $q); }

# The event id whose last twelve digits are $n.
sub event_id
{
	my (undef, $n) = @_;
	return sprintf('00000000-0000-4000-8000-%012d', $n);
}

# One JSON event line with id event_id($n): an impression of ad 7 ten
# seconds old, unless age (seconds before now()), ad or type say otherwise.
sub event
{
	my ($self, $n, %o) = @_;
	return sprintf(qq({"event_id":"%s","type":"%s","ad_id":%d,"campaign_id":1,"user_id":1,"store_id":1,"ts":%d}\n),
		$self->event_id($n), $o{type} // 'impression', $o{ad} // 7, ($self->{now} - ($o{age} // 10)) * 1000);
}

# Sends @events to $partition of the topic (kcat); dies if it fails.
sub produce
{
	my ($self, $partition, @events) = @_;
	my $in = join('', @events);
	IPC::Run::run([ 'kcat', '-P', '-b', $self->{broker}->{bootstrap}, '-t', $self->{topic}, '-p', $partition ], \$in)
	  or die 'kcat failed';
}

# The source on the topic, with two workers (one a partition).
sub create_source
{
	my ($self) = @_;
	$self->sql("SELECT adstream.create_source('$self->{source}', '$self->{broker}->{bootstrap}', '$self->{topic}', "
		  . q{options => '{"workers": 2}')});
}

# Before a hold: both partitions read first, ten seconds ago, so that their
# watermarks are well past the three-hour-old events hold_and_copy() sends;
# and one event of that hour (of ad 8), so that its partitions exist (a
# batch that creates them holds a lock until it commits, which would stall
# worker 1).  Returns once the three are consumed.
sub warm_up
{
	my ($self) = @_;
	$self->produce(0, $self->event(99, age => 3 * 3600, ad => 8), $self->event(100));
	$self->produce(1, $self->event(101));
	AdstreamTest::wait_consumed($self->{node}, $self->{source}, 3);
}

# Events 1 on partition 0 and 2 on partition 1 (event()'s defaults unless
# %o says otherwise, as event() takes them); returns once both are consumed.
sub read_one_each
{
	my ($self, %o) = @_;
	$self->produce(0, $self->event(1, %o));
	$self->produce(1, $self->event(2, %o));
	AdstreamTest::wait_consumed($self->{node}, $self->{source}, 2);
}

# Pauses the source and waits until its workers have stopped (dies if not).
sub pause
{
	my ($self) = @_;
	$self->sql("SELECT adstream.pause_source('$self->{source}')");
	$self->{node}->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM adstream.worker_status() WHERE pid IS NOT NULL})
	  or die 'workers did not stop';
}

# The offsets of the source, partition by partition, as
# "partition:next_offset/accepted/duplicates" separated by spaces.
sub offsets
{
	my ($self) = @_;
	return $self->sql(q{SELECT string_agg(format('%s:%s/%s/%s', partition, next_offset, accepted, duplicates), ' ' ORDER BY partition)
				   FROM adstream.offsets WHERE source = } . "'$self->{source}'");
}

# A row of adstream.set_aside as a batch of worker 1 would leave it: event
# event_id(3) at offset 0 of partition 1 (below its stored offset once the
# partition has been read), ten seconds old; type and payload (a bytea
# literal) may be given.
sub insert_set_aside
{
	my ($self, %o) = @_;
	my $type = $o{type} // 'impression';
	my $payload = $o{payload} // '\x7b7d';
	my $id = $self->event_id(3);
	$self->sql(qq{
INSERT INTO adstream.set_aside (source_id, partition, "offset", event_id, type, ad_id, campaign_id, user_id, store_id, ts, payload)
SELECT id, 1, 0, '$id', '$type', 7, 1, 1, 1, now() - interval '10 s', '$payload'
  FROM adstream.sources WHERE name = '$self->{source}';
});
}

# A trigger on dedup_log: a batch of worker 0 whose ids include one of
# public.ctl's held ids waits for the advisory lock $key (shared), then
# fails while public.ctl.fail is true.  hold_and_copy() sets the held id.
sub install_hold
{
	my ($self, $key) = @_;
	$self->sql(qq{
CREATE TABLE public.ctl (held bytea[] NOT NULL, fail boolean NOT NULL);
INSERT INTO public.ctl VALUES ('{}', false);
CREATE FUNCTION public.hold() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
	IF EXISTS (SELECT 1 FROM public.ctl, unnest(held) h WHERE position(h IN NEW.ids) > 0)
	   AND pg_backend_pid() = (SELECT pid FROM adstream.worker_status() WHERE worker_index = 0) THEN
		PERFORM pg_advisory_xact_lock_shared($key);
		IF (SELECT fail FROM public.ctl) THEN
			RAISE EXCEPTION 'injected failure of the holding batch';
		END IF;
	END IF;
	RETURN NEW;
END \$\$;
CREATE TRIGGER hold BEFORE INSERT ON adstream.dedup_log FOR EACH ROW EXECUTE FUNCTION public.hold();
});
}

# With install_hold()'s lock held by the test: worker 0 claims event $n
# (three hours old, on partition 0) and waits on the lock; then worker 1
# reads a copy on partition 1 and commits its batch, which brings
# partition 1's next offset to $p1_next.  Dies if either does not happen.
sub hold_and_copy
{
	my ($self, $n, $p1_next) = @_;
	my $hex = sprintf('%012d', $n);
	my $node = $self->{node};
	$self->sql("UPDATE public.ctl SET held = ARRAY[decode('00000000000040008000$hex', 'hex')]");
	$self->produce(0, $self->event($n, age => 3 * 3600));
	$node->poll_query_until('postgres',
		q{SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)})
	  or die 'worker 0 did not reach the held claim';
	$self->produce(1, $self->event($n, age => 3 * 3600));
	$node->poll_query_until('postgres',
		"SELECT next_offset = $p1_next FROM adstream.offsets WHERE source = '$self->{source}' AND partition = 1")
	  or die 'worker 1 did not commit its batch';
}

# A psql session that takes and gives back the session advisory lock $key
# when the test says, so that the batches that wait for it (a trigger) stay
# held in between.
package AdstreamSetAside::Locker;

# Starts the session on database postgres of $node.
sub start
{
	my ($class, $node, $key) = @_;
	my $self = bless { key => $key, in => '', out => '', err => '' }, $class;
	$self->{h} = IPC::Run::start([ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
		'<', \$self->{in}, '>', \$self->{out}, '2>', \$self->{err});
	return $self;
}

# Runs $sql (which must print $marker) and waits for its output.
sub _ask
{
	my ($self, $sql, $marker) = @_;
	$self->{out} = '';
	$self->{in} .= "$sql\n";
	$self->{h}->pump until $self->{out} =~ /$marker/;
}

# Takes the lock (returns once granted).
sub lock { $_[0]->_ask("SELECT pg_advisory_lock($_[0]->{key}), 'locked';", 'locked'); }

# Gives the lock back (returns once done).
sub unlock { $_[0]->_ask("SELECT pg_advisory_unlock($_[0]->{key}), 'unlocked';", 'unlocked'); }

# Ends the session (and with it any lock it still holds).
sub quit
{
	my ($self) = @_;
	$self->{in} .= "\\q\n";
	$self->{h}->finish;
}

1;
