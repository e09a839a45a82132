/**
 * Room on the Primary's data filesystem (issue 16: a full disk answers ENOSPC). Two tools:
 *
 * - reserve(): before a write is answered and queued, fallocate its range in the file with
 *   KEEP_SIZE (the size and the bytes do not change; the blocks are allocated), so its apply
 *   cannot meet a full disk. No room throws ENOSPC (EDQUOT, EFBIG) before anything is logged.
 * - low(): whether the filesystem is close enough to full (DATA_SPACE_RESERVE_BYTES) that every
 *   write, small ones too, should be reserved and applied before its reply. Measured with statfs
 *   at most every DATA_SPACE_CHECK_MS while there is room, at every call when there is not; the
 *   bytes answered since the last measurement are counted (`answered`).
 */
import fs from 'node:fs'
import { sys } from '../native'
import { DATA_SPACE_RESERVE_BYTES, DATA_SPACE_CHECK_MS } from '../limits'

export class DataSpace {
  /** Free bytes (as root, which the daemon applies as) when last measured, and when. */
  private free = Infinity
  private at = 0
  /** Bytes answered since the last measurement. */
  private since = 0
  /** The filesystem has no fallocate (EOPNOTSUPP): writes go unreserved. */
  private noFallocate = false

  constructor (private readonly root: string) {}

  /** A write of `n` bytes was answered (it will take up to `n` bytes more). */
  answered (n: number): void { this.since += n }

  /** Whether a write of `n` bytes, with `queued` bytes still to apply, would leave less than the reserve. */
  low (n: number, queued: number): boolean {
    if (this.free - this.since - queued - n >= DATA_SPACE_RESERVE_BYTES && Date.now() - this.at < DATA_SPACE_CHECK_MS) return false
    try {
      const st = fs.statfsSync(this.root)
      this.free = st.bfree * st.bsize
    } catch {
      this.free = 0 // cannot tell: take the careful path, which reports any error itself
    }
    this.at = Date.now()
    this.since = 0
    return this.free - queued - n < DATA_SPACE_RESERVE_BYTES
  }

  /**
   * Allocates `n` bytes at `offset` of the file `fd` without changing its size or bytes (fallocate
   * sets its mtime: copy-on-write for snapshots must come first). Throws ENOSPC, EDQUOT or EFBIG;
   * other errors are left to the apply, which reports them.
   */
  reserve (fd: number, offset: number, n: number): void {
    if (this.noFallocate || n === 0) return
    try {
      sys.fallocate(fd, sys.FALLOC_FL_KEEP_SIZE, offset, n)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') throw err
      if (code === 'EOPNOTSUPP' || code === 'ENOTSUP') this.noFallocate = true
    }
  }
}
