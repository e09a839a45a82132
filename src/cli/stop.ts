/** `replicafs stop`: asks the daemon to unmount and exit, and waits until it has. */
import path from 'node:path'
import { parse, required, helpText, type FlagSpec } from './args'
import { request } from '../control'
import { ReplError } from '../errors'
import { STOP_TIMEOUT_MS } from '../limits'
import { alive } from '../daemon/host'

export const STOP_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the daemon to stop' },
  help: { type: 'boolean', help: 'show this help' }
}
export const STOP_HELP = helpText('replicafs stop --state DIR', 'Unmounts cleanly (applying and checkpointing the SRL) and ends the daemon.', STOP_FLAGS)

export async function stopCommand (argv: string[]): Promise<number> {
  const { values } = parse('stop', argv, STOP_FLAGS)
  if (values.help) { process.stdout.write(STOP_HELP); return 0 }
  const state = required('stop', values, 'state')
  const status = await request(state, { cmd: 'status' }) as { pid: number }
  await request(state, { cmd: 'stop' })
  const deadline = Date.now() + STOP_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (!alive(status.pid)) return 0
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new ReplError('NOT_RUNNING', `the daemon (pid ${status.pid}) did not exit within ${STOP_TIMEOUT_MS / 1000} s; see ${path.join(state, 'daemon.log')}`)
}
