#!/usr/bin/env bash
# failover.sh: the day the Primary is lost, on one machine (both ends on loopback). It starts a
# pair and writes through the Primary; "loses" the Primary (kill -9); takes over on the Secondary,
# which becomes the Primary with everything it had logged and takes writes; starts the old
# Primary again with its usual command and shows that it now refuses writes (EROFS), having learnt
# it was taken over; then `replicafs failback` makes it the new Primary's Secondary in place (its
# own tree kept in a snapshot, only what either side changed sent), and checks the two data
# directories end identical. Run as root. Exit 0 means every check passed.
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

echo "== 2. The link is cut (pause), the Primary takes one more write, then is lost (kill -9)"
rfs pause --state "$P/state" >/dev/null
echo "order 21 (never reached the Secondary)" >> "$P/mnt/app/orders.log"
PPID_=$(json_field "$P/state" pid)
kill -9 "$PPID_"
wait_for "the Primary to die" bash -c "! kill -0 $PPID_ 2>/dev/null"
umount -l "$P/mnt" 2>/dev/null || true
wait_for "the Secondary to see it gone" field_is "$S/state" connected false

echo "== 3. replicafs takeover on the Secondary"
GEN_OLD=$(json_field "$S/state" generation.id)
rfs takeover --state "$S/state"
[ "$(json_field "$S/state" role)" = primary ] || fail "the Secondary did not become the Primary"
GEN=$(json_field "$S/state" generation.id)
echo "   its mount is read-write now; writing through it"
echo "order 21 (after the takeover)" >> "$S/mnt/app/orders.log"
echo "v2" > "$S/mnt/app/config"
rfs status --state "$S/state" | sed 's/^/   /'

echo "== 4. The old Primary comes back with its usual command"
rfs primary --data "$P/data" --mount "$P/mnt" --state "$P/state" --secondary "$ADDR" --secret-file "$WORK/secret" --daemon >/dev/null
rfs resume --state "$P/state" >/dev/null   # the link was paused in step 2
wait_for "the old Primary to learn it was taken over" field_is "$P/state" takenOver.by "$GEN"
if { echo "lost write" > "$P/mnt/app/config"; } 2>"$WORK/erofs"; then fail "the taken-over Primary accepted a write"; fi
echo "   a write through its mount: $(sed 's/^.*: //' "$WORK/erofs")"
grep -q 'Read-only file system' "$WORK/erofs" || fail "the refusal was not EROFS"
rfs status --state "$P/state" | grep -E 'TAKEN OVER|SPLIT-BRAIN' | sed 's/^/   /'

echo "== 5. replicafs failback on the old Primary: it becomes the new Primary's Secondary"
# Both sides appended to app/orders.log since the takeover: a split-brain. Nothing is merged;
# failback says so and wants --discard-local: this host gives up its changes (kept in a snapshot).
if rfs failback --state "$P/state" 2>"$WORK/split"; then fail "failback went ahead in a split-brain"; fi
echo "   $(cat "$WORK/split")"
grep -q 'app/orders.log' "$WORK/split" || fail "the split-brain refusal does not name app/orders.log"
rfs failback --state "$P/state" --discard-local
SNAP=failback-${GEN_OLD:0:8}
# From here the pair is reversed: stop_pair and caught_up work on these.
OLD_P=$P; P=$S; S=$OLD_P
wait_for "the old Primary to be resynchronized by difference" caught_up "$P/state"
rfs status --state "$P/state" --json | node -pe 'const l=JSON.parse(require("fs").readFileSync(0)).rlinks[0]; `   ${l.secondary}: ${l.state}, data-acked ${l.dataAckedSeq}; resynchronized with ${l.lastSync.bytes} bytes (${l.lastSync.differing} files differed)`'
echo "   its own tree as it was is in the snapshot $SNAP: $(ls "$S/mnt/.snapshots/$SNAP/app" | tr "\n" " ")"
echo "order 22 (replicated to the old Primary)" >> "$P/mnt/app/orders.log"
wait_for "the new Secondary to catch up" caught_up "$P/state"
if { echo "x" > "$S/mnt/app/config"; } 2>/dev/null; then fail "the failed-back host accepted a write"; fi

echo "== 6. Checks"
grep -q "order 21 (never reached the Secondary)" "$S/mnt/.snapshots/$SNAP/app/orders.log" || fail "the snapshot $SNAP does not keep the old Primary's orphaned write"
grep -q "never reached" "$S/mnt/app/orders.log" && fail "the orphaned write is still in the failed-back tree"
rfs stop --state "$P/state" >/dev/null
rfs stop --state "$S/state" >/dev/null
diff -r --no-dereference "$P/data" "$S/data" || fail "the data directories differ"
[ "$(tail -n 1 "$S/data/app/orders.log")" = "order 22 (replicated to the old Primary)" ] || fail "the last order did not reach the old Primary"
[ "$(cat "$S/data/app/config")" = v2 ] || fail "the old Primary does not have the new Primary's config"
echo "failover: OK (took over at generation $GEN; the old Primary refused writes, then was failed back with identical data)"
