# Shared by the examples: start/stop a local pair and read status fields. Sourced, not run.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPLICAFS=${REPLICAFS:-"$HERE/../bin/replicafs"}
IBC_SEND=${IBC_SEND:-"$HERE/../bin/ibc-send"}
rfs () { node "$REPLICAFS" "$@"; }
ibc_send () { node "$IBC_SEND" "$@"; }

# json_field STATE a.b.c: one field of `replicafs status --json`.
json_field () { rfs status --state "$1" --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{let v=JSON.parse(s);for(const k of process.argv[1].split('.'))v=v[k];process.stdout.write(String(v)+'\n')})" "$2"; }

# wait_for DESCRIPTION COMMAND...: polls COMMAND (every 0.1 s, for at most 60 s) until it succeeds.
wait_for () {
  local what=$1; shift
  for _ in $(seq 1 600); do if "$@" >/dev/null 2>&1; then return 0; fi; sleep 0.1; done
  echo "$(basename "$0"): timed out waiting for $what" >&2; return 1
}

# caught_up PRIMARY_STATE: every RLINK connected and has data-acked everything logged.
caught_up () {
  rfs status --state "$1" --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const j=JSON.parse(s);const n=j.srl.newestSeq??j.srl.appliedSeq;process.exit(j.rlinks.every(l=>l.state==='connected'&&l.dataAckedSeq>=n)?0:1)})"
}

# start_pair WORK: a Secondary and a Primary under WORK/{primary,secondary}; sets P, S, ADDR.
start_pair () {
  WORK=$1
  P=$WORK/primary; S=$WORK/secondary
  mkdir -p "$P/data" "$P/mnt" "$S/data" "$S/mnt"
  head -c 32 /dev/urandom | base64 > "$WORK/secret"; chmod 600 "$WORK/secret"
  rfs secondary --data "$S/data" --mount "$S/mnt" --state "$S/state" --listen 127.0.0.1:0 --secret-file "$WORK/secret" --daemon >/dev/null
  ADDR=$(json_field "$S/state" listen)
  rfs primary --data "$P/data" --mount "$P/mnt" --state "$P/state" --secondary "$ADDR" --secret-file "$WORK/secret" --daemon >/dev/null
  echo "   Primary mounted at $P/mnt, Secondary at $S/mnt (listening on $ADDR)"
}

stop_pair () {
  rfs stop --state "$P/state" >/dev/null 2>&1 || true
  rfs stop --state "$S/state" >/dev/null 2>&1 || true
}
