/**
 * `replicafs verify` on the Primary daemon (docs/ARCHITECTURE.md "Online verify"): picks the
 * RLINK, takes the Primary's snapshot between two records and sends VERIFY_BEGIN in the same turn
 * (so no record after it reaches the Secondary first), runs the comparison (src/sync/verify.ts),
 * deletes the snapshot, and with --repair hands what differs to the RLINK's change map and waits
 * for the resynchronization to end.
 */
import crypto from 'node:crypto'
import type { PrimaryRvg } from '../rvg/primary'
import type { RlinkSet, Rlink } from '../rlink/sender'
import type { SnapshotSet } from '../snapshot'
import { VerifySession, VERIFY_SNAPSHOT_PREFIX, type VerifyResult, type VerifyProgress } from '../sync'
import { MsgType } from '../format/wire'
import { ReplError } from '../errors'
import { RLINK_DEAD_AFTER_MS } from '../limits'
import type { Logger } from './lifecycle'

export interface VerifyAnswer extends VerifyResult {
  /** --repair: whether what differed was resynchronized (null: nothing to repair, or not asked). */
  repaired: boolean | null
  /** Why the repair did not finish, or null. */
  repairError: string | null
}

/** The verifies of one Primary daemon. */
export class PrimaryVerifier {
  private readonly running = new Set<VerifySession>()

  constructor (private readonly rvg: PrimaryRvg, private readonly rlinks: RlinkSet | null, private readonly snaps: SnapshotSet | null,
    private readonly log: Logger) {}

  /** The verifies running now, as status shows them. */
  get progress (): VerifyProgress[] { return [...this.running].map((s) => s.progress) }

  async command (req: { secondary?: unknown, repair?: unknown }, signal: AbortSignal): Promise<VerifyAnswer> {
    const link = this.pick(typeof req.secondary === 'string' ? req.secondary : undefined)
    const snaps = this.snaps
    if (snaps === null) throw new ReplError('WRONG_ROLE', 'a passthrough has no SRL, so no verify')
    const id = crypto.randomBytes(4).toString('hex')
    const name = VERIFY_SNAPSHOT_PREFIX + id
    const session = await this.rvg.exclusive(async (seq) => {
      this.check(link) // again: it may have gone while writes drained
      snaps.create(name, seq)
      const view = snaps.view(name)
      if (view === null) { snaps.delete(name); throw new ReplError('NOT_FOUND', `snapshot ${name} vanished`) }
      const s = new VerifySession(id, link.address, seq, view, (m) => link.sendVerify(m), this.rvg.root)
      link.verifying = s
      link.sendVerify({ t: MsgType.VERIFY_BEGIN, id, seq })
      return s
    })
    this.running.add(session)
    this.log(`verify ${id}: comparing this tree with the Secondary ${link.address}'s after sequence number ${session.seq}`)
    let result: VerifyResult
    try {
      result = await session.run(signal)
    } catch (err) {
      this.log(`verify ${id} failed: ${(err as Error).message}`)
      throw err
    } finally {
      if (link.verifying === session) link.verifying = null
      this.running.delete(session)
      try { snaps.delete(name) } catch (err) { this.log(`verify ${id}: cannot delete snapshot ${name}: ${(err as Error).message}`) }
    }
    this.log(`verify ${id}: ${result.identical ? 'identical' : `${result.differing} paths differ`} after sequence number ${result.seq} (${result.entries.primary} entries, ${result.bytes.primary} bytes compared in ${result.seconds} s)`)
    const answer: VerifyAnswer = { ...result, repaired: null, repairError: null }
    if (req.repair !== true || result.identical || this.rlinks === null) return answer
    this.running.add(session)
    session.repairing = true
    try {
      await this.rlinks.repair(link.address, session.paths)
      await this.resynchronized(link, signal)
      answer.repaired = true
      this.log(`verify ${id}: repaired: the ${result.differing} paths that differed were resynchronized`)
    } catch (err) {
      answer.repaired = false
      answer.repairError = (err as Error).message
    } finally {
      this.running.delete(session)
    }
    return answer
  }

  /** The RLINK to verify: the one named, or the only one; connected, consistent, not verifying. */
  private pick (address: string | undefined): Rlink {
    if (this.rlinks === null || this.rlinks.links.length === 0) throw new ReplError('NOT_FOUND', 'this Primary has no RLINK to verify (start it with --secondary HOST:PORT)')
    const links = this.rlinks.find(address)
    if (links.length > 1) throw new ReplError('USAGE', `this Primary replicates to ${links.map((l) => l.address).join(', ')}: name one with --secondary HOST:PORT`)
    this.check(links[0])
    return links[0]
  }

  private check (l: Rlink): void {
    if (!l.connected) throw new ReplError('NOT_CONNECTED', `the RLINK to ${l.address} is ${l.state}${l.lastError !== null ? ` (${l.lastError})` : ''}: verify compares over a connected RLINK`)
    const st = l.status()
    if (st.dcm !== null) throw new ReplError('BUSY', `the RLINK to ${l.address} is in DCM mode (${st.dcm.paths} paths in its change map): verify once it is resynchronized`)
    if (!st.consistent) throw new ReplError('BUSY', `the Secondary ${l.address} is being synchronized (inconsistent): verify once it is done`)
    if (l.verifying !== null) throw new ReplError('BUSY', `a verify of ${l.address} is running already`)
  }

  /**
   * Waits until `link` is back on the SRL, consistent (its resynchronization done). Gives up if
   * it stays down for RLINK_DEAD_AFTER_MS (the repair goes on when it is back) or the client goes.
   */
  private async resynchronized (link: Rlink, signal: AbortSignal): Promise<void> {
    let downSince: number | null = null
    for (;;) {
      const st = link.status()
      if (st.dcm === null && st.consistent && link.connected) return
      if (signal.aborted) throw new ReplError('VERIFY_FAILED', 'interrupted; the repair goes on in the daemon')
      if (link.connected) downSince = null
      else if (downSince === null) downSince = Date.now()
      else if (Date.now() - downSince > RLINK_DEAD_AFTER_MS) {
        throw new ReplError('NOT_CONNECTED', `the RLINK to ${link.address} is ${link.state}${link.lastError !== null ? ` (${link.lastError})` : ''}; the repair goes on when it is back (its change map holds the paths)`)
      }
      await this.rlinks!.progressOrSecond()
    }
  }
}
