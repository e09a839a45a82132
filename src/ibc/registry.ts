/**
 * IBC registrations on one host (VVR's RV_IBC_REGISTER / RV_IBC_UNREGISTER / RV_IBC_STATUS), kept
 * in the SRL's LevelDB so they survive a daemon restart (VVR keeps them in the kernel until a
 * reboot; a daemon restart is our reboot, and scripts should not have to register again).
 *
 * Keys (src/format/state.ts): ibc/reg/<APP>, and on a Secondary ibc/unreg/<APP> for unregistered
 * names, whose messages are discarded on arrival.
 */
import crypto from 'node:crypto'
import { LogStore } from '../srl/state'
import { State } from '../format/state'
import { IbcError } from '../errors'
import { IBC_NAME_BYTES_MAX, IBC_REGISTRATIONS_MAX, IBC_DELIVER_TIMEOUT_DEFAULT_S } from '../limits'

export interface Registration {
  name: string
  key: string
  deliverTimeoutS: number
  registeredAt: string
  /** Made by `ibc run` for its flow: a daemon restart aborts it (the flow is gone). */
  task?: boolean
}

export function checkName (name: string): void {
  if (typeof name !== 'string' || name === '') throw new IbcError('EIBC_INVALID_NAME', 'an IBC application name is required')
  if (Buffer.byteLength(name) > IBC_NAME_BYTES_MAX) throw new IbcError('EIBC_INVALID_NAME', `IBC application name "${name}" is longer than ${IBC_NAME_BYTES_MAX} bytes`)
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new IbcError('EIBC_INVALID_NAME', `IBC application name "${name}" may hold only letters, digits, '.', '_' and '-'`)
}

export class IbcRegistry {
  private readonly regs = new Map<string, Registration>()
  private readonly unregistered = new Set<string>()

  private constructor (private readonly store: LogStore) {}

  static async open (store: LogStore): Promise<IbcRegistry> {
    const r = new IbcRegistry(store)
    for (const [k, v] of await store.entries(State.ibcRegistered)) {
      const name = LogStore.idOf(State.ibcRegistered, k)
      r.regs.set(name, { name, ...v })
    }
    for (const [k] of await store.entries(State.ibcUnregistered)) r.unregistered.add(LogStore.idOf(State.ibcUnregistered, k))
    return r
  }

  get (name: string): Registration | undefined { return this.regs.get(name) }
  wasUnregistered (name: string): boolean { return this.unregistered.has(name) }
  list (): Registration[] { return [...this.regs.values()] }

  /** The registration for `name`, checking `key` when the caller gave one. EIBC_NO_APPLICATION otherwise. */
  require (name: string, key?: string): Registration {
    checkName(name)
    const r = this.regs.get(name)
    if (r === undefined) throw new IbcError('EIBC_NO_APPLICATION', `IBC application ${name} is not registered on this host`)
    if (key !== undefined && key !== r.key) throw new IbcError('EIBC_NO_APPLICATION', `the key given for IBC application ${name} is not its registration key`)
    return r
  }

  async register (name: string, deliverTimeoutS = IBC_DELIVER_TIMEOUT_DEFAULT_S, opts: { task?: boolean } = {}): Promise<Registration> {
    checkName(name)
    if (this.regs.has(name)) throw new IbcError('EIBC_DUP_APPLICATION', `IBC application ${name} is already registered on this host`)
    if (this.regs.size >= IBC_REGISTRATIONS_MAX) throw new IbcError('EIBC_MAX_REGISTRATIONS', `this host already has ${IBC_REGISTRATIONS_MAX} IBC registrations, the most an RVG may have`)
    if (!Number.isInteger(deliverTimeoutS) || deliverTimeoutS < 0) throw new IbcError('EIBC_INVALID_ARGUMENT', 'the deliver timeout must be a whole number of seconds (0: none)')
    const reg: Registration = { name, key: crypto.randomBytes(8).toString('hex'), deliverTimeoutS, registeredAt: new Date().toISOString(), ...(opts.task === true ? { task: true } : {}) }
    await this.store.put(State.ibcRegistered.key(name), { key: reg.key, deliverTimeoutS, registeredAt: reg.registeredAt, ...(opts.task === true ? { task: true } : {}) })
    if (this.unregistered.delete(name)) await this.store.del(State.ibcUnregistered.key(name))
    this.regs.set(name, reg)
    return reg
  }

  /** Removes a registration; `pending` says whether a delivery or unfreeze is outstanding for it. */
  async unregister (name: string, key: string | undefined, pending: boolean, remember: boolean): Promise<void> {
    this.require(name, key)
    if (pending) throw new IbcError('EIBC_IBC_PENDING', `IBC application ${name} has a delivery or an unfreeze pending`)
    await this.store.del(State.ibcRegistered.key(name))
    this.regs.delete(name)
    if (remember) {
      await this.store.put(State.ibcUnregistered.key(name), { at: new Date().toISOString() })
      this.unregistered.add(name)
    }
  }
}
