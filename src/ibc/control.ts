/** The daemon side of `replicafs ibc ...`: one control command, `ibc`, with an `op`. */
import { IbcError } from '../errors'
import type { IbcPrimary } from './primary'
import type { IbcSecondary } from './secondary'

export interface IbcRequest {
  cmd: string
  op?: unknown
  app?: unknown
  key?: unknown
  message?: unknown        // base64
  noFreeze?: unknown
  freezeTimeoutS?: unknown
  deliverTimeoutS?: unknown
  timeoutS?: unknown
  flush?: unknown
  [k: string]: unknown
}

function str (v: unknown): string | undefined { return typeof v === 'string' ? v : undefined }
function num (v: unknown, dflt: number): number { return typeof v === 'number' ? v : dflt }

export async function handleIbc (side: { primary: IbcPrimary } | { secondary: IbcSecondary }, req: IbcRequest, signal: AbortSignal): Promise<unknown> {
  const op = str(req.op)
  const app = str(req.app) ?? ''
  const key = str(req.key)
  const role = 'primary' in side ? 'Primary' : 'Secondary'
  const wrongRole = (what: string): never => { throw new IbcError('EIBC_WRONG_ROLE', `ibc ${what} runs on the ${role === 'Primary' ? 'Secondary' : 'Primary'}; this daemon is the ${role}`) }
  const registry = 'primary' in side ? side.primary.registry : side.secondary.registry
  switch (op) {
    case 'register': {
      const reg = await registry.register(app, num(req.deliverTimeoutS, 600))
      if ('secondary' in side) await side.secondary.registered(app)
      return { app, key: reg.key, deliverTimeoutS: reg.deliverTimeoutS }
    }
    case 'unregister':
      if ('primary' in side) await side.primary.unregister(app, key); else await side.secondary.unregister(app, key)
      return { app, unregistered: true }
    case 'send': {
      if (!('primary' in side)) return wrongRole('send')
      const message = Buffer.from(str(req.message) ?? '', 'base64')
      return side.primary.send(app, key, message, { noFreeze: req.noFreeze === true, freezeTimeoutS: num(req.freezeTimeoutS, 0), flush: req.flush === true })
    }
    case 'receive': {
      if (!('secondary' in side)) return wrongRole('receive')
      const m = await side.secondary.receive(app, key, num(req.timeoutS, 0), signal)
      return { app: m.app, id: m.id, seq: m.seq, message: m.message.toString('base64'), frozen: m.frozen }
    }
    case 'unfreeze':
      if (!('secondary' in side)) return wrongRole('unfreeze')
      return side.secondary.unfreeze(app, key)
    case 'status':
      return 'primary' in side ? side.primary.status() : side.secondary.status()
    default:
      throw new IbcError('EIBC_INVALID_ARGUMENT', `unknown ibc operation ${String(op)}`)
  }
}
