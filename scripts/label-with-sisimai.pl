#!/usr/bin/perl
# Labels a corpus folder's messages with Sisimai, the established bounce parser, so that the
# bounce reader can be scored against Sisimai's reading of mail from sources other than the
# shared corpus (whose labels are Sisimai 5.1's). Needs Debian's `libsisimai-perl` (4.25);
# the test suite does not: it reads the file this writes.
#
# Usage: scripts/label-with-sisimai.pl tests/corpus/flufl > tests/corpus/flufl/sisimai-4.25.jsonl
#
# One JSON object per message named in the folder's labels.jsonl, in its order:
# {"file", "bounces": [{"recipient", "reason", "status", "type"}]}. `type` is Sisimai's
# reading mapped as the shared corpus maps it: Permanent for its hard bounces (userunknown,
# hostunknown, hasmoved; notaccept under a 5.x.x status), Undetermined for onhold and
# undefined, Transient otherwise. Success, vacation and feedback records are left out.
use strict;
use warnings;
use Sisimai;
use JSON::PP;

my $dir = shift or die "usage: $0 CORPUS_DIR\n";
my $json = JSON::PP->new->canonical(1);
open(my $labels, '<', "$dir/labels.jsonl") or die "$dir/labels.jsonl: $!\n";
while (my $line = <$labels>) {
    my $file = $json->decode($line)->{file};
    my $read = eval { Sisimai->make("$dir/$file", 'delivered' => 1, 'vacation' => 1) } || [];
    my @bounces;
    for my $e (@$read) {
        my $reason = $e->reason // '';
        next if $reason eq 'delivered' || $reason eq 'vacation' || $reason eq 'feedback';
        my $status = $e->deliverystatus // '';
        my $type = 'Transient';
        $type = 'Permanent' if $reason =~ /\A(?:userunknown|hostunknown|hasmoved)\z/;
        $type = 'Permanent' if $reason eq 'notaccept' && $status =~ /\A5/;
        $type = 'Undetermined' if $reason eq 'onhold' || $reason eq 'undefined';
        push @bounces, { recipient => lc($e->recipient->address // ''), reason => $reason, status => $status, type => $type };
    }
    print $json->encode({ file => $file, bounces => \@bounces }), "\n";
}
