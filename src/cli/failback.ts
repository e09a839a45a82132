/**
 * `replicafs failback`: VVR's fast failback, run on an old Primary that another host took over
 * from (it refuses writes with EROFS since it learned it). Its tree as it is (with the updates that
 * never reached the new Primary) is kept in snapshot `failback-<its generation>`; it becomes the
 * new Primary's Secondary in place (the mount stays, read-only), dials it, and is resynchronized by
 * difference of only the paths either side changed since the takeover (src/daemon/failback.ts).
 */
import { parse, required, helpText, type FlagSpec } from './args'
import { request } from '../control'

export const FAILBACK_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the old Primary' },
  'discard-local': { type: 'boolean', help: 'in a split-brain (both sides changed the same paths since the takeover): give up this host\'s changes (kept in the snapshot) for the new Primary\'s' },
  json: { type: 'boolean', help: 'print the result as JSON' },
  help: { type: 'boolean', help: 'show this help' }
}

export const FAILBACK_HELP = helpText('replicafs failback --state DIR [--discard-local] [--json]',
  'Makes this Primary, which another host took over from, a Secondary of that host. Its tree as it\nis now, with the updates it logged after the takeover that never reached the new Primary, is kept\nin the snapshot failback-<generation> (MOUNT/.snapshots/, `replicafs snapshot list`); its old SRL\nis kept in STATE/srl.failback-<generation>. The daemon keeps running as the Secondary: its mount\nstays, read-only; it dials the new Primary where it learned of the takeover and is resynchronized\nby difference of the paths either side changed since (`status` shows it inconsistent until then).\nIts usual `replicafs primary` command starts it as that Secondary from then on. Refused on a\nPrimary no host took over from. In a split-brain (status: SPLIT-BRAIN, the paths changed on both\nsides since the takeover) it is refused unless --discard-local says this host gives up its\nchanges; nothing is ever merged. Re-running it is safe: after a crash part-way the next start\ncompletes it; once done it reports so.',
  FAILBACK_FLAGS)

interface FailbackResult { primary: string, generation: string, previous: string, seq: number, orphaned: number, paths: number | null, snapshot: string, already?: string, resynchronized?: boolean }

export async function failbackCommand (argv: string[]): Promise<number> {
  const { values } = parse('failback', argv, FAILBACK_FLAGS)
  if (values.help) { process.stdout.write(FAILBACK_HELP); return 0 }
  const state = required('failback', values, 'state')
  const r = await request(state, { cmd: 'failback', discardLocal: values['discard-local'] === true }, 600_000) as FailbackResult
  if (values.json === true) { process.stdout.write(JSON.stringify(r) + '\n'); return 0 }
  if (r.already !== undefined) {
    process.stdout.write(`already failed back (${r.already}): this host is a Secondary of generation ${r.generation} at ${r.primary}${r.resynchronized === true ? '' : ', being resynchronized'}; its own tree as it was is in snapshot ${r.snapshot}\n`)
    return 0
  }
  process.stdout.write(`failed back: this host is a Secondary of generation ${r.generation} at ${r.primary}, from sequence number ${r.seq}; its ${r.orphaned} updates that never reached it are kept in snapshot ${r.snapshot}; resynchronizing ${r.paths === null ? 'every file' : `the paths either side changed (${r.paths} here)`} by difference\n`)
  return 0
}
