/**
 * `replicafs takeover`: VVR's `vradmin takeover`, run on a Secondary whose Primary is lost. The
 * Secondary applies every update logged in its SRL, records a new data generation, and becomes the
 * Primary in place: its mount turns read-write and it goes on listening where it listened, so the
 * old Primary, started again, learns it was taken over and refuses writes (src/daemon/secondary.ts).
 */
import { parse, required, helpText, type FlagSpec } from './args'
import { request } from '../control'

export const TAKEOVER_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the Secondary' },
  json: { type: 'boolean', help: 'print the result as JSON' },
  help: { type: 'boolean', help: 'show this help' }
}

export const TAKEOVER_HELP = helpText('replicafs takeover --state DIR [--json]',
  'Makes this Secondary the Primary when its Primary is lost. Every update logged in its SRL is\napplied first (IBC messages among them are not delivered); its data is then the Primary\'s as of\nthat update, whose sequence number is printed. A new data generation is recorded: the old Primary,\nwhen it comes back, learns it was taken over and refuses every write (EROFS) until\n`replicafs failback`. Refused while the Primary is connected, or while this Secondary is\ninconsistent (being synchronized). The daemon keeps running, now as the Primary; its usual\n`replicafs secondary` command starts it as the Primary from then on. Re-running it is safe: after\na crash part-way it completes; once done it reports what it did.',
  TAKEOVER_FLAGS)

interface TakeoverResult { generation: string, previous: string | null, seq: number, applied: number, discarded: number, already?: string }

export async function takeoverCommand (argv: string[]): Promise<number> {
  const { values } = parse('takeover', argv, TAKEOVER_FLAGS)
  if (values.help) { process.stdout.write(TAKEOVER_HELP); return 0 }
  const state = required('takeover', values, 'state')
  // Applying what is logged may take as long as the Secondary was behind.
  const r = await request(state, { cmd: 'takeover' }, 600_000) as TakeoverResult
  if (values.json === true) { process.stdout.write(JSON.stringify(r) + '\n'); return 0 }
  if (r.already !== undefined) {
    process.stdout.write(`already took over (${r.already}): this host is the Primary, generation ${r.generation}, with the data as of sequence number ${r.seq} (${r.applied} logged updates applied first, ${r.discarded} discarded)\n`)
    return 0
  }
  process.stdout.write(`took over: this host is the Primary, generation ${r.generation}, with the data as of sequence number ${r.seq} (${r.applied} logged updates applied first, ${r.discarded} discarded)\n`)
  return 0
}
