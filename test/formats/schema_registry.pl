#!/usr/bin/perl
# A schema registry stand-in for the input-format tests: serves Confluent's
#   GET /schemas/ids/{id}   200 {"schema": "<the text of DIR/{id}.avsc>"}
#                           404 {"error_code": 40403, ...} when there is no such file
# on 127.0.0.1, one request per connection, until killed.  Any other path is
# a 404 without that error code (an answer that is not a registry's).
#
#   schema_registry.pl DIR [PORT]    prints "PORT n" once it listens
#
# Every request is appended to DIR/requests.log ("GET /schemas/ids/7 200"),
# so a test can count how often the workers asked.
use strict;
use warnings;
use IO::Socket::INET;

my ($dir, $port) = @ARGV;
die "usage: $0 DIR [PORT]\n" unless defined $dir && -d $dir;
my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port // 0,
	Listen => 16, ReuseAddr => 1, Proto => 'tcp') or die "listen: $!\n";
$| = 1;
print "PORT ", $srv->sockport, "\n";

sub json_string
{
	my ($s) = @_;
	$s =~ s/(["\\])/\\$1/g;
	$s =~ s/\n/\\n/g;
	$s =~ s/\t/\\t/g;
	$s =~ s/([\x00-\x1f])/sprintf('\\u%04x', ord($1))/ge;
	return qq{"$s"};
}

while (my $c = $srv->accept)
{
	$c->autoflush(1);
	my $line = <$c>;
	next unless defined $line;
	while (my $h = <$c>) { last if $h =~ /^\r?\n$/; }
	my ($status, $body);
	if ($line =~ m{^GET /schemas/ids/(\d+) HTTP/1\.[01]})
	{
		my $file = "$dir/$1.avsc";
		if (open(my $fh, '<', $file))
		{
			local $/;
			my $schema = <$fh>;
			($status, $body) = ('200 OK', '{"schema": ' . json_string($schema) . '}');
		}
		else
		{
			($status, $body) = ('404 Not Found', qq({"error_code": 40403, "message": "Schema $1 not found"}));
		}
	}
	else
	{
		($status, $body) = ('404 Not Found', '{"message": "no such path"}');
	}
	if (open(my $log, '>>', "$dir/requests.log"))
	{
		my ($req) = $line =~ /^(\S+ \S+)/;
		print $log ($req // '?'), ' ', substr($status, 0, 3), "\n";
		close $log;
	}
	print $c "HTTP/1.1 $status\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n"
	  . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
	close $c;
}
