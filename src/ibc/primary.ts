/**
 * IBC on the Primary: registrations and send (VVR's RV_IBC_SEND). A message becomes an IBC record in
 * the SRL, appended like any other change: after every update already acknowledged (the RVG's
 * barrier), committed (fdatasync) before `send` returns, and network-acked first in the synchronous
 * modes. `ibc-send` flushes first: it waits for writes in flight and syncs the SRL, so everything
 * written before it is in the stream ahead of the message.
 */
import { IbcRegistry } from './registry'
import { IbcError } from '../errors'
import { RecordType, IBC_FLAG_NOFREEZE, nowTimespec, type RecordMeta } from '../format/record'
import type { Srl } from '../srl'
import { IBC_MESSAGE_BYTES_MAX } from '../limits'

export interface SendOptions { noFreeze?: boolean, freezeTimeoutS?: number, flush?: boolean }

export function ibcId (srlId: string, seq: number): string {
  return `${srlId.slice(0, 8)}-${seq}`
}

/** What sending needs from the Primary's RVG (src/rvg/primary.ts): journal a record, flush. */
export interface IbcJournal {
  /** Waits until every change so far is applied. */
  barrier (): Promise<void>
  /** Makes every record so far durable in the SRL. */
  sync (): Promise<void>
  /** Journals and applies one record; resolves with its sequence number. */
  mutate (type: RecordType, meta: RecordMeta): Promise<number>
}

export class IbcPrimary {
  private sending = new Map<string, number>()

  private constructor (readonly registry: IbcRegistry, private readonly rvg: IbcJournal, private readonly srl: Srl) {}

  static async open (srl: Srl, rvg: IbcJournal): Promise<IbcPrimary> {
    return new IbcPrimary(await IbcRegistry.open(srl.store), rvg, srl)
  }

  async send (app: string, key: string | undefined, message: Buffer, opts: SendOptions): Promise<{ id: string, seq: number }> {
    this.registry.require(app, key)
    if (message.length > IBC_MESSAGE_BYTES_MAX) throw new IbcError('EIBC_MSG_LENGTH', `the IBC message is ${message.length} bytes; the most is ${IBC_MESSAGE_BYTES_MAX}`)
    const freezeTimeoutS = opts.freezeTimeoutS ?? 0
    if (!Number.isInteger(freezeTimeoutS) || freezeTimeoutS < 0) throw new IbcError('EIBC_INVALID_ARGUMENT', 'the freeze timeout must be a whole number of seconds (0: none)')
    if (opts.noFreeze && freezeTimeoutS > 0) throw new IbcError('EIBC_INVALID_ARGUMENT', 'a freeze timeout makes no sense with "do not freeze"')
    this.sending.set(app, (this.sending.get(app) ?? 0) + 1)
    try {
      if (opts.flush) {
        await this.rvg.barrier()
        await this.rvg.sync()
      }
      const seq = await this.rvg.mutate(RecordType.IBC, { n: app, x: message, f: opts.noFreeze ? IBC_FLAG_NOFREEZE : 0, s: freezeTimeoutS, t: nowTimespec() })
      await this.rvg.sync()
      return { id: ibcId(this.srl.srlId, seq), seq }
    } finally {
      const n = (this.sending.get(app) ?? 1) - 1
      if (n === 0) this.sending.delete(app); else this.sending.set(app, n)
    }
  }

  async unregister (app: string, key: string | undefined): Promise<void> {
    await this.registry.unregister(app, key, this.sending.has(app), false)
  }

  status (): unknown {
    return { registrations: this.registry.list().map((r) => ({ name: r.name, deliverTimeoutS: r.deliverTimeoutS, registeredAt: r.registeredAt })) }
  }
}
