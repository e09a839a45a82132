/**
 * `replicafs migrate`: VVR's `vradmin migrate`, a planned switch of roles with no data loss, run on
 * the Primary. Its mount refuses changes from then on (EROFS: the writers go to the other host),
 * the Secondary data-acks every update, then it becomes the Primary of a new data generation and
 * this host its Secondary, both daemons in place; the host that dialled goes on dialling
 * (src/daemon/primary.ts, docs/ARCHITECTURE.md "Migrate").
 */
import { parse, required, helpText, type FlagSpec } from './args'
import { request } from '../control'

export const MIGRATE_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the Primary' },
  json: { type: 'boolean', help: 'print the result as JSON' },
  help: { type: 'boolean', help: 'show this help' }
}

export const MIGRATE_HELP = helpText('replicafs migrate --state DIR [--json]',
  'Moves the Primary role to this Primary\'s Secondary, losing nothing: every change through this\nhost\'s mount is refused (EROFS) from the start (writers move to the other host\'s mount, which\nturns read-write), the Secondary data-acks every update (at most 120 s), then it becomes the\nPrimary of a new data generation and this host its Secondary. Neither daemon restarts; their\nusual commands start them in their new roles. Refused, nothing changed, when the Secondary is not\nconnected and consistent or does not catch up (the lag is named), or when there is not exactly\none Secondary. If the answer is lost (the link cut at that instant), this host refuses changes\nuntil the Secondary is heard again; re-run migrate then. Run it on the new Primary to switch back.',
  MIGRATE_FLAGS)

interface MigrateResult { role: string, primary: string, generation: string, previous: string, seq: number, already?: string, migrated?: boolean }

export async function migrateCommand (argv: string[]): Promise<number> {
  const { values } = parse('migrate', argv, MIGRATE_FLAGS)
  if (values.help) { process.stdout.write(MIGRATE_HELP); return 0 }
  const state = required('migrate', values, 'state')
  const r = await request(state, { cmd: 'migrate' }, 300_000) as MigrateResult
  if (values.json === true) { process.stdout.write(JSON.stringify(r) + '\n'); return 0 }
  if (r.already !== undefined) {
    process.stdout.write(`already a Secondary (${r.already}): of generation ${r.generation} at ${r.primary}\n`)
    return 0
  }
  process.stdout.write(`migrated: this host is the Secondary of ${r.primary}, now the Primary of generation ${r.generation}, from sequence number ${r.seq}\n`)
  return 0
}
