/**
 * Online verify's comparison: two walks of the same order (src/sync/manifest.ts), the Primary's
 * and the Secondary's, merged like two sorted lists as their entries arrive. Every path that
 * differs is named with what differs and, for a file's bytes, the byte ranges; a directory on one
 * side only is one difference, with the count of what is below it.
 */
import fs from 'node:fs'
import type { VerifyEntry } from '../format/wire'
import { HASH_BYTES } from './hash'
import { compareOrder, verifyChunkBytes } from './manifest'

/**
 * One path that differs. what: 'missing' (on the Secondary only the Primary has it), 'extra' (on
 * the Secondary only), or what of it differs: 'type', 'mode', 'owner', 'mtime', 'size', 'content',
 * 'xattrs', 'target' (a symlink's), 'device', 'link' (which names are one file). ranges: the byte
 * ranges of 'content', [offset, length]. below: entries under a directory on one side only.
 */
export interface Difference { p: string, what: string[], ranges?: Array<[number, number]>, below?: number }

/** Differences kept for the report; every differing path is still counted and repaired. */
export const DIFFERENCES_LISTED = 10000

export class TreeCompare {
  private readonly mine: VerifyEntry[] = []
  private readonly theirs: VerifyEntry[] = []
  private mineDone = false
  private theirsDone = false
  /** A directory on one side only: entries below it on that side are counted into it. */
  private only: { d: Difference, prefix: string, side: 'mine' | 'theirs' } | null = null
  readonly differences: Difference[] = []
  /** Paths that differ (all of them), each with whether everything below it goes with it (repair). */
  readonly paths = new Map<string, boolean>()
  compared = 0

  get count (): number { return this.paths.size }
  /** Entries waiting for the other side's. */
  get mineQueued (): number { return this.mine.length }
  get theirsQueued (): number { return this.theirs.length }
  get done (): boolean { return this.mineDone && this.theirsDone && this.mine.length === 0 && this.theirs.length === 0 }

  /** The Primary's next entry. */
  pushMine (e: VerifyEntry): void { this.mine.push(e); this.merge() }
  /** The Secondary's next entries. */
  pushTheirs (es: VerifyEntry[]): void { for (const e of es) this.theirs.push(e); this.merge() }
  endMine (): void { this.mineDone = true; this.merge() }
  endTheirs (): void { this.theirsDone = true; this.merge() }

  private merge (): void {
    let i = 0
    let j = 0
    for (;;) {
      const a = i < this.mine.length ? this.mine[i] : null
      const b = j < this.theirs.length ? this.theirs[j] : null
      if (a === null && b === null) break
      if (a === null && !this.mineDone) break
      if (b === null && !this.theirsDone) break
      const c = a === null ? 1 : b === null ? -1 : compareOrder(a.p, b.p)
      if (c < 0) { this.oneSide(a!, 'mine'); i++ } else if (c > 0) { this.oneSide(b!, 'theirs'); j++ } else { this.both(a!, b!); i++; j++ }
    }
    this.mine.splice(0, i)
    this.theirs.splice(0, j)
  }

  /** `e` is on one side only (or below a directory that is). */
  private oneSide (e: VerifyEntry, side: 'mine' | 'theirs'): void {
    this.compared++
    const o = this.only
    if (o !== null && o.side === side && e.p.startsWith(o.prefix)) { o.d.below = (o.d.below ?? 0) + 1; return }
    const d: Difference = { p: e.p, what: [side === 'mine' ? 'missing' : 'extra'] }
    this.add(d, e.k === 'd')
    this.only = e.k === 'd' ? { d, prefix: e.p === '/' ? '/' : e.p + '/', side } : null
  }

  private both (a: VerifyEntry, b: VerifyEntry): void {
    this.compared++
    this.only = null
    const what: string[] = []
    let ranges: Array<[number, number]> | undefined
    if (a.k !== b.k || (a.m & fs.constants.S_IFMT) !== (b.m & fs.constants.S_IFMT)) what.push('type')
    else {
      if ((a.m & 0o7777) !== (b.m & 0o7777)) what.push('mode')
      if (a.u !== b.u || a.g !== b.g) what.push('owner')
      if (a.mt[0] !== b.mt[0] || a.mt[1] !== b.mt[1]) what.push('mtime')
      if (!sameBytes(a.x, b.x)) what.push('xattrs')
      if (a.l !== b.l) what.push('target')
      if (a.r !== b.r) what.push('device')
      if (a.h !== b.h) what.push('link')
      if (a.k === 'f') {
        if (a.s !== b.s) what.push('size')
        if (a.c !== undefined && b.c !== undefined) {
          ranges = differingRanges(a.s ?? 0, a.c, b.s ?? 0, b.c)
          if (ranges.length > 0) what.push('content')
          else ranges = undefined
        }
      }
    }
    if (what.length === 0) return
    const d: Difference = { p: a.p, what }
    if (ranges !== undefined) d.ranges = ranges
    // A different kind replaces everything below it; otherwise only the path itself is resent.
    const type = what.includes('type')
    this.add(d, type)
    // What is below a directory that is something else on the other side is counted into it.
    if (type && (a.k === 'd' || b.k === 'd')) this.only = { d, prefix: a.p + '/', side: a.k === 'd' ? 'mine' : 'theirs' }
  }

  private add (d: Difference, tree: boolean): void {
    if (this.differences.length < DIFFERENCES_LISTED) this.differences.push(d)
    this.paths.set(d.p, tree)
  }
}

const sameBytes = (a: Uint8Array | undefined, b: Uint8Array | undefined): boolean =>
  a === undefined || b === undefined ? a === b : Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))

/**
 * The byte ranges where two files' chunk hashes differ, [offset, length], adjacent ones merged;
 * what one file has past the other's end differs. Files whose chunks are of different sizes (one
 * over 16 GiB and the other not) differ as a whole.
 */
export function differingRanges (sa: number, ca: Uint8Array, sb: number, cb: Uint8Array): Array<[number, number]> {
  const unit = verifyChunkBytes(sa)
  const end = Math.max(sa, sb)
  if (unit !== verifyChunkBytes(sb)) return end > 0 ? [[0, end]] : []
  const out: Array<[number, number]> = []
  const push = (o: number, n: number): void => {
    const last = out[out.length - 1]
    if (last !== undefined && last[0] + last[1] === o) last[1] += n
    else out.push([o, n])
  }
  const common = Math.min(sa, sb)
  const na = ca.length / HASH_BYTES
  const nb = cb.length / HASH_BYTES
  for (let i = 0; i * unit < common; i++) {
    const o = i * unit
    // A last chunk shorter on one side than the other (the sizes differ) differs.
    const lenA = Math.min(unit, sa - o)
    const lenB = Math.min(unit, sb - o)
    const same = lenA === lenB && i < na && i < nb &&
      Buffer.compare(ca.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES), cb.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES)) === 0
    if (!same) push(o, Math.min(unit, common - o))
  }
  if (end > common) push(common, end - common)
  return out
}
