#!/usr/bin/env bash
# local-pair.sh: a Primary and a Secondary on this machine, talking TCP on loopback: the setup for
# developers testing off-host processing on one box. It starts both, writes through the Primary
# mount, waits until the Secondary has applied everything, checks the two data directories are
# identical, shows status, and stops both. Run as root. Exit 0 means every check passed.
#
#   examples/local-pair.sh [WORKDIR]      (default: a new directory under /tmp, removed at the end)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPLICAFS=${REPLICAFS:-"$HERE/../bin/replicafs"}
rfs () { node "$REPLICAFS" "$@"; }

WORK=${1:-$(mktemp -d /tmp/replicafs-local-pair-XXXXXX)}
KEEP=${1:+yes}
P=$WORK/primary; S=$WORK/secondary
mkdir -p "$P/data" "$P/mnt" "$S/data" "$S/mnt"
head -c 32 /dev/urandom | base64 > "$WORK/secret"; chmod 600 "$WORK/secret"

cleanup () {
  rfs stop --state "$P/state" >/dev/null 2>&1 || true
  rfs stop --state "$S/state" >/dev/null 2>&1 || true
  [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# A status field from --json, e.g. field STATE rlinks.0.dataAckedSeq
field () { rfs status --state "$1" --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{let v=JSON.parse(s);for(const k of process.argv[1].split('.'))v=v[k];process.stdout.write(String(v)+'\n')})" "$2"; }
# Waits until the Primary's every RLINK has data-acked everything it logged.
caught_up () {
  for _ in $(seq 1 600); do
    if rfs status --state "$1" --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const j=JSON.parse(s);const n=j.srl.newestSeq??j.srl.appliedSeq;process.exit(j.rlinks.every(l=>l.state==='connected'&&l.dataAckedSeq>=n)?0:1)})"; then return 0; fi
    sleep 0.1
  done
  echo "local-pair: the Secondary did not catch up" >&2; return 1
}

echo "== Secondary on 127.0.0.1 (any free port)"
rfs secondary --data "$S/data" --mount "$S/mnt" --state "$S/state" --listen 127.0.0.1:0 --secret-file "$WORK/secret" --daemon
ADDR=$(field "$S/state" listen)
echo "   listening on $ADDR"
echo "== Primary replicating to it"
rfs primary --data "$P/data" --mount "$P/mnt" --state "$P/state" --secondary "$ADDR" --secret-file "$WORK/secret" --daemon

echo "== Writing through the Primary mount"
mkdir -p "$P/mnt/project/src"
for i in $(seq 1 50); do echo "line $i" >> "$P/mnt/project/log.txt"; done
printf 'int main(void) { return 0; }\n' > "$P/mnt/project/src/main.c"
ln -s src/main.c "$P/mnt/project/entry"
mv "$P/mnt/project/log.txt" "$P/mnt/project/log.old"
chmod 600 "$P/mnt/project/log.old"

caught_up "$P/state"
echo "== The Secondary's read-only mount shows the same tree"
ls -lR "$S/mnt/project"
if echo x > "$S/mnt/project/nope" 2>/dev/null; then echo "local-pair: the Secondary mount accepted a write" >&2; exit 1; fi
rfs status --state "$P/state"
rfs status --state "$S/state"

echo "== Stopping both and comparing the data directories"
rfs stop --state "$P/state"
rfs stop --state "$S/state"
diff -r --no-dereference "$P/data" "$S/data"
[ "$(stat -c '%a %Y' "$P/data/project/log.old")" = "$(stat -c '%a %Y' "$S/data/project/log.old")" ]
echo "local-pair: OK (identical data directories)"
