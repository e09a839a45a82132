/**
 * `replicafs sync`: makes every change made through the mount so far durable in the SRL.
 * `sync`/`syncfs` on a FUSE mount does not reach a libfuse 2 server, so scripts that need a
 * durability point without an open file (backup scripts, `ibc-send`) use this.
 */
import { parse, required, helpText, type FlagSpec } from './args'
import { request } from '../control'

export const SYNC_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the Primary' },
  help: { type: 'boolean', help: 'show this help' }
}
export const SYNC_HELP = helpText('replicafs sync --state DIR', 'Makes every change made through the mount so far durable (fdatasync of the SRL).', SYNC_FLAGS)

export async function syncCommand (argv: string[]): Promise<number> {
  const { values } = parse('sync', argv, SYNC_FLAGS)
  if (values.help) { process.stdout.write(SYNC_HELP); return 0 }
  // A sync waits for the disk, which may take longer than a status request may.
  await request(required('sync', values, 'state'), { cmd: 'sync' }, 120_000)
  return 0
}
