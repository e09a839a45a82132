/** `replicafs pause` / `replicafs resume`: VVR's pauserep / resumerep, run against the Primary. */
import { parse, required, helpText, type FlagSpec } from './args'
import { request } from '../control'
import { parseAddress, formatAddress } from '../rlink/common'

export const PAUSE_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the Primary' },
  secondary: { type: 'string', arg: 'HOST:PORT', help: 'only this RLINK (as given to primary --secondary; default: every RLINK)' },
  help: { type: 'boolean', help: 'show this help' }
}

const HELP = {
  pause: helpText('replicafs pause --state DIR [--secondary HOST:PORT]',
    'Stops replicating to a Secondary (or all): the link is closed and stays closed, the SRL keeps\nevery update for it, and the pause survives a restart of the Primary. The Secondary stays\nconsistent at the last update it applied.', PAUSE_FLAGS),
  resume: helpText('replicafs resume --state DIR [--secondary HOST:PORT]',
    'Resumes replication paused with `replicafs pause`: the link reconnects and sends what accumulated.', PAUSE_FLAGS)
}

export async function pauseCommand (cmd: 'pause' | 'resume', argv: string[]): Promise<number> {
  const { values } = parse(cmd, argv, PAUSE_FLAGS)
  if (values.help) { process.stdout.write(HELP[cmd]); return 0 }
  const state = required(cmd, values, 'state')
  const secondary = typeof values.secondary === 'string' ? formatAddress(parseAddress(values.secondary, 'secondary')) : undefined
  const res = await request(state, { cmd, secondary }) as Record<string, string[]>
  const links = res[cmd === 'pause' ? 'paused' : 'resumed'] ?? []
  process.stdout.write(`${cmd === 'pause' ? 'paused' : 'resumed'} replication to ${links.join(', ')}\n`)
  return 0
}
