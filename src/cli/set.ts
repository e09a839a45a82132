/**
 * `replicafs set --state DIR bandwidth-limit RATE [--secondary HOST:PORT]`: changes an RLINK
 * attribute of the running Primary (VVR's `vradmin set bandwidth_limit=`). Like `drbdsetup`, it
 * lasts until the daemon stops: the flag or the config file says what it starts with.
 */
import { parse, required, helpText, type FlagSpec } from './args'
import { request } from '../control'
import { parseAddress, formatAddress } from '../rlink/common'
import { parseRate, formatRate } from '../rlink/rate'
import { ReplError } from '../errors'

export const SET_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the Primary' },
  secondary: { type: 'string', arg: 'HOST:PORT', help: 'only this RLINK (as given to primary --secondary; default: every RLINK)' },
  help: { type: 'boolean', help: 'show this help' }
}

const ATTRIBUTES = ['bandwidth-limit']

export const SET_HELP = helpText('replicafs set --state DIR [--secondary HOST:PORT] bandwidth-limit RATE',
  'Changes an attribute of the running Primary\'s RLINKs (VVR\'s vradmin set):\n' +
  '  bandwidth-limit RATE   at most RATE bytes per second on each RLINK: 512K, 10M, 1G, or bits:\n' +
  '                         100mbit; none: no limit (primary --bandwidth-limit)\n' +
  'It holds until the daemon stops: put it in the --config file (or the flag) to keep it.', SET_FLAGS)

export async function setCommand (argv: string[]): Promise<number> {
  const { values, positionals } = parse('set', argv, SET_FLAGS, 2)
  if (values.help) { process.stdout.write(SET_HELP); return 0 }
  const state = required('set', values, 'state')
  const [attr, value] = positionals
  if (attr === undefined) throw new ReplError('USAGE', `replicafs set: which attribute? (${ATTRIBUTES.join(', ')}; see replicafs set --help)`)
  if (!ATTRIBUTES.includes(attr)) throw new ReplError('USAGE', `replicafs set: unknown attribute ${attr} (the attributes are ${ATTRIBUTES.join(', ')})`)
  if (value === undefined) throw new ReplError('USAGE', `replicafs set: ${attr} needs a value (e.g. 10M, or none)`)
  const rate = parseRate(value, `replicafs set: ${attr}`)
  const secondary = typeof values.secondary === 'string' ? formatAddress(parseAddress(values.secondary, 'secondary')) : undefined
  const res = await request(state, { cmd: 'set', attr, value: rate, secondary }) as { set?: string[] }
  process.stdout.write(`${attr} ${formatRate(rate)} on ${(res.set ?? []).join(', ')}\n`)
  return 0
}
