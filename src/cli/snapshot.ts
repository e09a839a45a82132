/**
 * `replicafs snapshot create|list|delete|restore`: instant, space-optimised copy-on-write snapshots
 * of this host's data directory (VVR's instant space-optimized snapshots). create/list/delete talk
 * to the running daemon; restore rolls the data directory back and needs the daemon stopped.
 * A snapshot is visible read-only at MOUNT/.snapshots/NAME/.
 */
import { parse, required, helpText, type FlagSpec } from './args'
import { request } from '../control'
import { ReplError } from '../errors'

const STATE = { type: 'string', arg: 'DIR', help: 'the state directory of the daemon' } as const
const FLAGS: FlagSpec = { state: STATE, json: { type: 'boolean', help: 'print JSON' }, help: { type: 'boolean', help: 'show this help' } }

const USAGE: Record<string, [string, string]> = {
  create: ['replicafs snapshot create NAME --state DIR [--json]', 'Takes a snapshot of the data directory now, between two updates (on a frozen Secondary: exactly at the IBC\nmessage). Instant whatever the tree\'s size; it then holds only what changes after it, in 64 KiB chunks.'],
  list: ['replicafs snapshot list --state DIR [--json]', 'Lists the snapshots: name, creation time, the SRL sequence number it represents, the space it holds.'],
  delete: ['replicafs snapshot delete NAME --state DIR', 'Deletes a snapshot and frees the space only it holds.'],
  restore: ['replicafs snapshot restore NAME --state DIR [--json]', 'Rolls the data directory back to the snapshot. The daemon must be stopped (on a Secondary: replication\nstopped). On a Secondary the SRL is reset to the snapshot\'s sequence number, so the Primary resends\nwhat follows if it still holds it. Snapshots newer than NAME are deleted.']
}

export const SNAPSHOT_HELP = `usage: replicafs snapshot create|list|delete|restore ...

${Object.values(USAGE).map(([u]) => `  ${u}`).join('\n')}
`

interface Info { name: string, createdAt: string, seq: number, bytes: number }

export async function snapshotCommand (argv: string[]): Promise<number> {
  const [op, ...rest] = argv
  if (op === undefined || op === '--help' || op === '-h') { process.stdout.write(SNAPSHOT_HELP); return op === undefined ? 2 : 0 }
  if (USAGE[op] === undefined) throw new ReplError('USAGE', `replicafs snapshot: unknown operation ${op} (see replicafs snapshot --help)`)
  const { values, positionals } = parse(`snapshot ${op}`, rest, FLAGS, op === 'list' ? 0 : 1)
  if (values.help) { process.stdout.write(helpText(USAGE[op][0], USAGE[op][1], FLAGS)); return 0 }
  const state = required(`snapshot ${op}`, values, 'state')
  const name = positionals[0]
  if (op !== 'list' && (name === undefined || name === '')) throw new ReplError('USAGE', `replicafs snapshot ${op}: the snapshot NAME is required`)
  const json = values.json === true
  switch (op) {
    case 'create': {
      const r = await request(state, { cmd: 'snapshot', op, name }, 120_000) as Info
      process.stdout.write(json ? JSON.stringify(r) + '\n' : `snapshot ${r.name} at sequence number ${r.seq}\n`)
      return 0
    }
    case 'list': {
      const r = await request(state, { cmd: 'snapshot', op }, 60_000) as Info[]
      if (json) { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); return 0 }
      if (r.length === 0) { process.stdout.write('no snapshots\n'); return 0 }
      process.stdout.write(['NAME'.padEnd(24) + 'CREATED'.padEnd(26) + 'SEQ'.padStart(10) + 'BYTES'.padStart(14)]
        .concat(r.map((s) => s.name.padEnd(24) + s.createdAt.padEnd(26) + String(s.seq).padStart(10) + String(s.bytes).padStart(14))).join('\n') + '\n')
      return 0
    }
    case 'delete':
      await request(state, { cmd: 'snapshot', op, name }, 120_000)
      return 0
    case 'restore': {
      const { restoreOffline } = await import('../daemon/restore')
      const r = await restoreOffline(state, name)
      process.stdout.write(json ? JSON.stringify(r) + '\n' : `restored ${r.data} to snapshot ${name} (sequence number ${r.seq})${r.note ? `; ${r.note}` : ''}\n`)
      return 0
    }
  }
  return 0
}
