#!/usr/bin/env bash
# A throw-away postfix instance on 127.0.0.1:$PORT with its own config, queue and maildirs;
# nothing system-wide is touched. It accepts mail for any user at mx.test and then bounces the
# unknown ones with a genuine RFC 3464 DSN, delivered to the maildir of the return path's
# domain `bounces.test` (VERP addresses `bounces+<id>@bounces.test` land in BASE/mail/bounces).
# With a third argument INBOUND, mail for bounces.test goes by SMTP to 127.0.0.1:INBOUND
# instead (the DSN loop through an inbound listener).
# Usage: setup-postfix.sh <base-dir> [port] [inbound-port]   (as root; needs Debian's postfix)
# Start: postfix -c BASE/etc start-fg     Stop: postfix -c BASE/etc stop
set -euo pipefail
BASE=$(realpath -m "${1:?base dir}"); PORT=${2:-2526}; INBOUND=${3:-}
mkdir -p "$BASE"/{etc,queue,data,mail}
cat > "$BASE/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $BASE/queue
data_directory = $BASE/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test
mydomain = test
myorigin = mx.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination = localhost, mx.test
# accept any local recipient at SMTP time, so unknown users bounce *after* acceptance (a real DSN)
local_recipient_maps =
alias_maps =
alias_database =
biff = no
smtpd_banner = \$myhostname ESMTP test-postfix
# deliveries for the sender domain go to maildirs under $BASE/mail; `+` separates a VERP tag
recipient_delimiter = +
virtual_mailbox_domains = bounces.test
virtual_mailbox_base = $BASE/mail
virtual_mailbox_maps = texthash:$BASE/etc/vmailbox
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
# never talk to the outside world: everything not local is deferred
default_transport = error:outside mail disabled in test instance
relayhost =
smtp_dns_support_level = disabled
disable_dns_lookups = yes
# log to stdout of 'postfix start-fg' (Postfix >= 3.4); or a file path (needs the postlog service below)
maillog_file = /dev/stdout
bounce_queue_lifetime = 0
maximal_queue_lifetime = 1h
queue_run_delay = 5s
minimal_backoff_time = 5s
shlib_directory = /usr/lib/postfix
# per-recipient SMTP-time answers (permanent / transient) for tests
smtpd_recipient_restrictions = check_recipient_access texthash:$BASE/etc/rcpt_access, permit_mynetworks, reject_unauth_destination
CF
cat > "$BASE/etc/rcpt_access" <<'MAP'
hard@mx.test      550 5.1.1 User unknown
full@mx.test      452 4.2.2 Mailbox full
blocked@mx.test   554 5.7.1 Relay access denied
MAP
printf 'sender@bounces.test  sender/\nbounces@bounces.test  bounces/\n' > "$BASE/etc/vmailbox"
if [ -n "$INBOUND" ]; then
  printf 'bounces.test  smtp:[127.0.0.1]:%s\n' "$INBOUND" > "$BASE/etc/transport"
  printf 'transport_maps = texthash:%s/etc/transport\n' "$BASE" >> "$BASE/etc/main.cf"
fi
cat > "$BASE/etc/master.cf" <<CF
127.0.0.1:$PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CF
chown -R postfix:postfix "$BASE/mail" "$BASE/data"
postfix -c "$BASE/etc" check
