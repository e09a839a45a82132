/**
 * What the RVGs need from the objects around them, owned here so that rvg/ imports none of them:
 * the Primary's RLINKs (src/rlink/sender.ts RlinkSet implements Replication), the snapshots
 * (src/snapshot SnapshotSet implements Preserver), and the token of exclusive() (src/rvg/gate.ts).
 */
import type { Position } from '../format/state'
import type { Record } from '../format/record'

/** What the RVG needs from its RLINKs (src/rlink/sender.ts RlinkSet). */
export interface Replication {
  /** Before an append: throws to refuse the update (synchronous=fail with a link down). */
  admit(): void
  /** Synchronously after every append. */
  appended(seq: number): void
  /** After each fdatasync of the SRL: records up to `seq` are durable and may be sent. */
  synced(seq: number): void
  /** After appending a write, or applying any other change, `seq`: resolves when the synchronous mode is satisfied (null: nothing to wait for). */
  acked(seq: number): Promise<void> | null
  /** The oldest position a Secondary still needs; records after it stay in the SRL. */
  retainFrom(): Position | null
  /** Before retainFrom() for a release: the change maps of RLINKs in DCM mode take the records up to `upto`. */
  foldMaps(upto: number): Promise<void>
  /** Persists what retainFrom depends on, before a release. */
  persist(): Promise<void>
  /**
   * The SRL is full and Secondaries hold its tail: SRL overflow protection (--srlprot) decides,
   * per Secondary, to wait for it, take it off the SRL (DCM, detach), or refuse (throws SRL_FULL).
   * Resolves when the caller may try again.
   */
  overflow(): Promise<void>
  describeLag(): string
}

/** Proof of holding PrimaryRvg.exclusive(). */
export interface ExclusiveToken { readonly exclusive?: true }

/** Copy-on-write snapshots (src/snapshot): told about every record just before it is applied. */
export interface Preserver {
  beforeApply (rec: Record): void
  /** Makes what was preserved durable; runs at each checkpoint before the data directory's sync. */
  sync? (): Promise<void>
}
