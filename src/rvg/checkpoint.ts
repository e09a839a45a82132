/**
 * Checkpoints, as both RVGs take them: the data directory made durable up to the applied position
 * (the snapshot store first, whose items must be durable before the changes they preserve; then
 * syncfs of the data directory; then the ring synced and `synced` written: replay after a reboot
 * starts there), then the SRL's tail moved past what may be released (LevelDB `durable`,
 * sync:true). One at a time: callers during a run share it.
 *
 * Durability point: a record is released only after its effect on the data directory is on disk.
 */
import type { Srl } from '../srl'
import type { Position } from '../format/state'
import { syncfs } from '../apply'

/** What a checkpoint syncs before the data directory (the snapshot store), if anything. */
export interface CheckpointHost { readonly snapshots: { sync? (): Promise<void> } | null }

export class Checkpoints {
  private running: Promise<void> | null = null
  /** The last record made durable in the data directory by a checkpoint. */
  durableSeq: number
  /**
   * Why the last checkpoint could not be recorded (the SRL's filesystem is full: LevelDB cannot
   * write), or null. Not fatal: the ring is preallocated, so records are still logged; they stay
   * in the SRL until a checkpoint can release them, and a full ring then refuses writers (SRL_FULL).
   */
  blocked: string | null = null

  constructor (private readonly root: string, private readonly srl: Srl, private readonly host: CheckpointHost, private readonly log?: (line: string) => void) {
    this.durableSeq = srl.tailSeq
  }

  /** Whether a checkpoint is running. */
  get busy (): boolean { return this.running !== null }

  /**
   * Makes `applied` durable in the data directory, then releases up to what `releasable` says
   * (null: nothing; it may persist what the choice depends on before answering).
   */
  run (applied: Position, releasable: (applied: Position) => Promise<Position | null>): Promise<void> {
    if (this.running) return this.running
    this.running = (async () => {
      try {
        if (applied.seq !== this.durableSeq) {
          await this.host.snapshots?.sync?.()
          await syncfs(this.root)
          await this.srl.markSynced(applied)
          this.durableSeq = applied.seq
        }
        const pos = await releasable(applied)
        if (pos !== null && pos.seq > this.srl.tailSeq) await this.srl.release(pos)
      } catch (err) {
        if (!stateFull(err)) throw err
        if (this.blocked === null) this.log?.(`the SRL's filesystem is full: a checkpoint cannot be recorded (${(err as Error).message}); records stay in the SRL until there is room`)
        this.blocked = (err as Error).message
        return
      }
      if (this.blocked !== null) {
        this.log?.('the SRL\'s filesystem has room again: checkpoints are recorded')
        this.blocked = null
      }
    })().finally(() => { this.running = null })
    return this.running
  }
}

/** Whether a checkpoint failed because LevelDB could not write: the SRL's filesystem is full. */
function stateFull (err: unknown): boolean {
  const e = err as { code?: string, message?: string }
  return e.code === 'LEVEL_IO_ERROR' && /No space left on device|Disk quota exceeded/i.test(e.message ?? '')
}
