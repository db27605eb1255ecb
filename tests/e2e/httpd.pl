# A small HTTP and WebSocket server for the ingress tests and benchmarks
# (the guest image has perl, not python): perl httpd.pl PORT TAG.
# GET answers who it is and what the proxy told it (X-Forwarded-*); /echo
# sends the request body back (Content-Length or chunked); /discard reads a
# Content-Length body without keeping it and says how many bytes came;
# /bytes/N sends N bytes; /hang never answers; a WebSocket upgrade echoes
# each message. A process per
# connection; keep-alive.
use strict; use warnings;
use IO::Socket::INET; use Digest::SHA qw(sha1); use MIME::Base64;
$SIG{CHLD} = 'IGNORE';
my ($port, $tag) = @ARGV;
my $l = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => $port, Listen => 128, ReuseAddr => 1) or die "listen: $!";
while (1) {
  my $c = $l->accept or next;
  my $pid = fork();
  if (!defined $pid || $pid) { close $c; next }
  close $l; binmode $c; serve($c); exit 0;
}
sub serve {
  my $c = shift;
  while (defined(my $req = <$c>)) {
    $req =~ s/\r?\n$//;
    my ($m, $path) = split / /, $req;
    my %h;
    while (defined(my $x = <$c>)) { $x =~ s/\r?\n$//; last if $x eq ''; my ($k, $v) = split /:\s*/, $x, 2; $h{lc $k} = $v }
    my $body = '';
    if (defined $h{'content-length'}) {
      my $n = $h{'content-length'};
      if ($path =~ m{^/discard}) {
        my $got = 0;
        while ($got < $n) { my $r = read($c, my $buf, $n - $got < 65536 ? $n - $got : 65536); return unless $r; $got += $r }
        $body = "n=$got\n";
      } else {
        while (length($body) < $n) { my $r = read($c, my $buf, $n - length($body)); return unless $r; $body .= $buf }
      }
    } elsif (lc($h{'transfer-encoding'} // '') eq 'chunked') {
      while (1) {
        my $s = <$c>; return unless defined $s; $s =~ s/\r?\n$//; my $n = hex $s;
        if ($n == 0) { while (defined(my $t = <$c>)) { last if $t =~ /^\r?\n$/ } last }
        read($c, my $buf, $n) == $n or return; $body .= $buf; my $crlf = <$c>;
      }
    }
    if (lc($h{upgrade} // '') eq 'websocket') { websocket($c, $h{'sec-websocket-key'}); return }
    if ($path =~ m{^/hang}) { sleep 3600; return }
    if ($path =~ m{^/bytes/(\d+)}) {
      my $n = $1; print $c "HTTP/1.1 200 OK\r\nContent-Length: $n\r\n\r\n";
      my $chunk = 'x' x 65536; while ($n > 0) { my $k = $n < 65536 ? $n : 65536; print $c substr($chunk, 0, $k); $n -= $k }
      $c->flush; next;
    }
    my $out = $path =~ m{^/(echo|discard)} ? $body
      : "hello from $tag\nxff=" . ($h{'x-forwarded-for'} // '') . "\nxfh=" . ($h{'x-forwarded-host'} // '')
        . "\nxfp=" . ($h{'x-forwarded-proto'} // '') . "\n$m $path\n";
    print $c "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " . length($out) . "\r\n\r\n" . $out;
    $c->flush;
  }
}
sub websocket {
  my ($c, $key) = @_;
  my $accept = encode_base64(sha1($key . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'), '');
  print $c "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: $accept\r\n\r\n";
  $c->flush;
  while (1) {
    read($c, my $hd, 2) == 2 or return;
    my ($b1, $b2) = unpack('CC', $hd);
    my ($op, $len) = ($b1 & 15, $b2 & 127);
    if ($len == 126) { read($c, my $e, 2); $len = unpack('n', $e) } elsif ($len == 127) { read($c, my $e, 8); $len = unpack('Q>', $e) }
    my $mask = ''; read($c, $mask, 4) if $b2 & 128;
    my $data = ''; while (length($data) < $len) { my $r = read($c, my $buf, $len - length $data); return unless $r; $data .= $buf }
    if (length $mask) { my @m = unpack('C4', $mask); my @d = unpack('C*', $data); $d[$_] ^= $m[$_ % 4] for 0 .. $#d; $data = pack('C*', @d) }
    return if $op == 8;
    my $n = length $data;
    my $f = pack('C', 128 | $op) . ($n < 126 ? pack('C', $n) : $n < 65536 ? pack('Cn', 126, $n) : pack('CQ>', 127, $n));
    print $c $f . $data; $c->flush;
  }
}
