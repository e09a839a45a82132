#!/usr/bin/env bash
# offhost-report.sh: a report computed on the Secondary, from a snapshot taken at a consistent
# point, while the Primary keeps writing. The Primary appends sales to a ledger; at a mark
# (`ibc-send` under the ledger's lock) the Secondary freezes, snapshots and unfreezes; the report
# (sales count and total per region) is computed from the snapshot, off the Primary host, and
# equals the ledger as it was at the mark. Run as root.
#
#   examples/offhost-report.sh [WORKDIR]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WORK=${1:-$(mktemp -d /tmp/replicafs-report-XXXXXX)}
KEEP=${1:+yes}
WRITER=
cleanup () {
  [ -z "$WRITER" ] || kill "$WRITER" 2>/dev/null || true
  [ -z "$WRITER" ] || wait "$WRITER" 2>/dev/null || true
  stop_pair
  [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT
report () { awk -F, '{ n[$1]++; t[$1] += $2 } END { for (r in n) printf "%s %d %d\n", r, n[r], t[r] }' "$1" | sort; }

echo "== Starting a Primary and a Secondary on loopback"
start_pair "$WORK"
LEDGER=$P/mnt/sales/ledger.csv
LOCK=$WORK/ledger.lock
mkdir -p "$P/mnt/sales"
: > "$LEDGER"

echo "== The Primary appends sales continuously"
( i=0; regions=(north south east west); while [ ! -e "$WORK/stop" ]; do
    i=$((i + 1))
    flock "$LOCK" sh -c "echo '${regions[$((i % 4))]},$((i % 97 + 3))' >> '$LEDGER'"
  done ) &
WRITER=$!
wait_for "some sales" sh -c "[ \$(wc -l < '$LEDGER') -ge 50 ]"

rfs ibc register --state "$S/state" report >/dev/null
rfs ibc receive --state "$S/state" report --timeout 60 > /dev/null &
RECEIVER=$!
echo "== Mark: the ledger as it is now"
flock "$LOCK" sh -c "node '$IBC_SEND' --state '$P/state' report > /dev/null && cp '$LEDGER' '$WORK/ledger-at-mark'"
wait "$RECEIVER"
rfs snapshot create report-1 --state "$S/state"
rfs ibc unfreeze --state "$S/state" report
rfs ibc unregister --state "$S/state" report

echo "== Report computed from the Secondary's snapshot while the Primary keeps writing"
report "$S/mnt/.snapshots/report-1/sales/ledger.csv" | tee "$WORK/report"
wait_for "the Primary to write more" sh -c "[ \$(wc -l < '$LEDGER') -gt \$(wc -l < '$WORK/ledger-at-mark') ]"
touch "$WORK/stop"; wait "$WRITER"; WRITER=
report "$WORK/ledger-at-mark" > "$WORK/expected"
diff "$WORK/expected" "$WORK/report"
# The snapshot did not move while replication went on.
wait_for "the Secondary to catch up" caught_up "$P/state"
report "$S/mnt/.snapshots/report-1/sales/ledger.csv" | diff "$WORK/expected" -
echo "offhost-report: OK (report = ledger at the mark: $(wc -l < "$WORK/ledger-at-mark") sales)"
