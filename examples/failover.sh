#!/usr/bin/env bash
# failover.sh: the day the Primary is lost, on one machine (both ends on loopback). It starts a
# pair and writes through the Primary; "loses" the Primary (kill -9); takes over on the Secondary,
# which becomes the Primary with everything it had logged and takes writes; starts the old
# Primary again with its usual command and shows that it now refuses writes (EROFS), having learnt
# it was taken over; then rejoins it by hand as a Secondary of the new Primary, synchronized by
# difference (`replicafs failback` will do that step in one command; it is not built yet), and
# checks the two data directories end identical. Run as root. Exit 0 means every check passed.
#
#   examples/failover.sh [WORKDIR]      (default: a new directory under /tmp, removed at the end)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

WORK=${1:-$(mktemp -d /tmp/replicafs-failover-XXXXXX)}
KEEP=${1:+yes}
cleanup () {
  stop_pair
  [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail () { echo "failover: $*" >&2; exit 1; }
# field_is STATE FIELD VALUE: a status field has that value now.
field_is () { [ "$(json_field "$1" "$2" 2>/dev/null)" = "$3" ]; }

echo "== 1. A pair: Secondary, then a Primary replicating to it"
start_pair "$WORK"
mkdir -p "$P/mnt/app"
for i in $(seq 1 20); do echo "order $i" >> "$P/mnt/app/orders.log"; done
echo "v1" > "$P/mnt/app/config"
wait_for "the Secondary to catch up" caught_up "$P/state"
echo "   the Secondary has applied everything: sequence number $(json_field "$S/state" appliedSeq)"

echo "== 2. The Primary host is lost (kill -9 of its daemon; its mount goes with it)"
PPID_=$(json_field "$P/state" pid)
kill -9 "$PPID_"
wait_for "the Primary to die" bash -c "! kill -0 $PPID_ 2>/dev/null"
umount -l "$P/mnt" 2>/dev/null || true
wait_for "the Secondary to see it gone" field_is "$S/state" connected false

echo "== 3. replicafs takeover on the Secondary"
rfs takeover --state "$S/state"
[ "$(json_field "$S/state" role)" = primary ] || fail "the Secondary did not become the Primary"
GEN=$(json_field "$S/state" generation.id)
echo "   its mount is read-write now; writing through it"
echo "order 21 (after the takeover)" >> "$S/mnt/app/orders.log"
echo "v2" > "$S/mnt/app/config"
rfs status --state "$S/state" | sed 's/^/   /'

echo "== 4. The old Primary comes back with its usual command"
rfs primary --data "$P/data" --mount "$P/mnt" --state "$P/state" --secondary "$ADDR" --secret-file "$WORK/secret" --daemon >/dev/null
wait_for "the old Primary to learn it was taken over" field_is "$P/state" takenOver.by "$GEN"
if { echo "lost write" > "$P/mnt/app/config"; } 2>"$WORK/erofs"; then fail "the taken-over Primary accepted a write"; fi
echo "   a write through its mount: $(sed 's/^.*: //' "$WORK/erofs")"
grep -q 'Read-only file system' "$WORK/erofs" || fail "the refusal was not EROFS"
rfs status --state "$P/state" | grep 'TAKEN OVER' | sed 's/^/   /'

echo "== 5. Rejoin it as the new Primary's Secondary (by hand until replicafs failback exists)"
rfs stop --state "$P/state" >/dev/null
# What it had, its orphaned writes included, is kept (never deleted): a copy of its data, and its
# state directory moved aside; it starts over as a Secondary with a new state directory.
cp -a "$P/data" "$WORK/old-primary-data-$GEN"
mv "$P/state" "$WORK/old-primary-state-$GEN"
rfs secondary --data "$P/data" --mount "$P/mnt" --state "$P/state" --listen 127.0.0.1:0 \
  --secret-file "$WORK/secret" --sync-existing --daemon >/dev/null
ADDR2=$(json_field "$P/state" listen)
rfs stop --state "$S/state" >/dev/null
# The new Primary, restarted to add its Secondary, keeps answering at its old address (--listen).
rfs primary --data "$S/data" --mount "$S/mnt" --state "$S/state" --secondary "$ADDR2" --listen "$ADDR" --secret-file "$WORK/secret" --daemon >/dev/null
# From here the pair is reversed: stop_pair and caught_up work on these.
OLD_P=$P; P=$S; S=$OLD_P
wait_for "the old Primary to be synchronized by difference" caught_up "$P/state"
echo "   synchronized: $(rfs status --state "$P/state" --json | node -pe 'const l=JSON.parse(require("fs").readFileSync(0)).rlinks[0]; `${l.secondary} ${l.state}, data-acked ${l.dataAckedSeq}`')"
echo "order 22 (replicated to the old Primary)" >> "$P/mnt/app/orders.log"
wait_for "the new Secondary to catch up" caught_up "$P/state"

echo "== 6. Checks"
rfs stop --state "$P/state" >/dev/null
rfs stop --state "$S/state" >/dev/null
diff -r --no-dereference "$P/data" "$S/data" || fail "the data directories differ"
[ "$(tail -n 1 "$S/data/app/orders.log")" = "order 22 (replicated to the old Primary)" ] || fail "the last order did not reach the old Primary"
[ "$(cat "$S/data/app/config")" = v2 ] || fail "the old Primary does not have the new Primary's config"
[ -f "$WORK/old-primary-data-$GEN/app/orders.log" ] || fail "the copy of the old Primary's data is missing"
echo "failover: OK (took over at generation $GEN; the old Primary refused writes, then rejoined with identical data)"
