#!/usr/bin/env bash
# consistent-backup.sh: a consistent backup taken on the Secondary while the Primary keeps working.
#
# A sqlite3 database is written continuously through the Primary mount. The backup script takes
# the application's lock for a moment and runs `sync && ibc-send`; the Secondary, waiting in
# `ibc receive`, is frozen exactly at that point, takes a snapshot and unfreezes at once. A tar of
# the snapshot is then taken while replication goes on, and `PRAGMA integrity_check` on the
# database in the tar says ok, with exactly the rows the Primary had at the send. Run as root.
#
#   examples/consistent-backup.sh [WORKDIR]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v sqlite3 >/dev/null || { echo "consistent-backup: needs sqlite3" >&2; exit 1; }

WORK=${1:-$(mktemp -d /tmp/replicafs-backup-XXXXXX)}
KEEP=${1:+yes}
WRITER=
cleanup () {
  [ -z "$WRITER" ] || kill "$WRITER" 2>/dev/null || true
  [ -z "$WRITER" ] || wait "$WRITER" 2>/dev/null || true
  stop_pair
  [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT

echo "== Starting a Primary and a Secondary on loopback"
start_pair "$WORK"
DB=$P/mnt/app.db
LOCK=$WORK/app.lock
# Readers and the writer share the database: wait for its locks instead of failing with SQLITE_BUSY.
sq () { sqlite3 -cmd '.timeout 10000' "$@"; }
sq "$DB" 'CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER NOT NULL);'

echo "== The application writes orders continuously (one transaction at a time, under its lock)"
( i=0; while [ ! -e "$WORK/stop" ]; do
    i=$((i + 1))
    flock "$LOCK" sqlite3 -cmd '.timeout 10000' "$DB" "BEGIN; INSERT INTO orders(item, qty) VALUES ('item-$i', $((i % 7 + 1))); UPDATE orders SET qty = qty + 1 WHERE id = 1; COMMIT;"
  done ) &
WRITER=$!
wait_for "some orders" sh -c "[ \$(sqlite3 -cmd '.timeout 10000' '$DB' 'SELECT count(*) FROM orders') -ge 20 ]"

echo "== Secondary: register and wait for the backup mark"
rfs ibc register --state "$S/state" backup >/dev/null
rfs ibc receive --state "$S/state" backup --json --timeout 60 > "$WORK/received.json" &
RECEIVER=$!

echo "== Primary: quiesce the application for an instant, sync && ibc-send"
flock "$LOCK" sh -c "sync && node '$IBC_SEND' --state '$P/state' backup nightly > '$WORK/sent-id' && sqlite3 -cmd '.timeout 10000' '$DB' 'SELECT count(*), sum(qty) FROM orders' > '$WORK/at-send'"
wait "$RECEIVER"
echo "   sent $(cat "$WORK/sent-id"); received $(cat "$WORK/received.json")"
grep -q "\"id\":\"$(cat "$WORK/sent-id")\"" "$WORK/received.json"

echo "== Secondary (frozen at the mark): snapshot, then unfreeze at once"
echo "   Secondary status: frozen=$(json_field "$S/state" frozen || true)"
rfs snapshot create nightly --state "$S/state" --json > "$WORK/snapshot.json"
cat "$WORK/snapshot.json"
# The snapshot is exactly the tree before the message: its sequence number is the message's - 1.
SEQ=$(node -e "process.stdout.write(String(JSON.parse(require('fs').readFileSync('$WORK/received.json','utf8')).seq - 1)+'\n')")
grep -q "\"seq\":$SEQ[,}]" "$WORK/snapshot.json" || { echo "consistent-backup: the snapshot is not at sequence number $SEQ" >&2; exit 1; }
rfs ibc unfreeze --state "$S/state" backup
rfs ibc unregister --state "$S/state" backup

echo "== Tar of the snapshot while replication goes on"
tar -C "$S/mnt/.snapshots/nightly" -cf "$WORK/backup.tar" .
touch "$WORK/stop"; wait "$WRITER"; WRITER=
wait_for "replication to go on past the mark" caught_up "$P/state"

mkdir "$WORK/restore-test"
tar -C "$WORK/restore-test" -xf "$WORK/backup.tar"
CHECK=$(sqlite3 "$WORK/restore-test/app.db" 'PRAGMA integrity_check')
IN_BACKUP=$(sqlite3 "$WORK/restore-test/app.db" 'SELECT count(*), sum(qty) FROM orders')
LIVE=$(sq "$S/mnt/app.db" 'SELECT count(*) FROM orders')
echo "   integrity_check: $CHECK; backup has $IN_BACKUP (count|sum); the Primary had $(cat "$WORK/at-send") at the send; the live Secondary now has $LIVE orders"
[ "$CHECK" = ok ]
[ "$IN_BACKUP" = "$(cat "$WORK/at-send")" ]
[ "$LIVE" -gt "${IN_BACKUP%%|*}" ]
rfs snapshot list --state "$S/state"
echo "consistent-backup: OK"
