/**
 * The size of a tree, for a synchronization's progress (rate and ETA): its entries and the bytes
 * a full synchronization sends (a file's allocated bytes at most: holes are not sent). Counted in
 * the background, with the data directory live, so the figures are an estimate, as rsync's
 * incremental totals are.
 */
import fs from 'node:fs'
import path from 'node:path'

export interface TreeSize { entries: number, bytes: number }

/** Counts the tree at `root`; resolves null if `cancelled()` says so before it is done. */
export async function countTree (root: string, cancelled: () => boolean): Promise<TreeSize | null> {
  const size: TreeSize = { entries: 1, bytes: 0 }
  const dirs = [root]
  while (dirs.length > 0) {
    if (cancelled()) return null
    const dir = dirs.pop()!
    let names: fs.Dirent[]
    try { names = await fs.promises.readdir(dir, { withFileTypes: true }) } catch { continue } // gone meanwhile
    for (const d of names) {
      size.entries++
      const full = path.join(dir, d.name)
      if (d.isDirectory()) dirs.push(full)
      else if (d.isFile()) {
        try {
          const st = await fs.promises.lstat(full)
          size.bytes += Math.min(st.size, st.blocks * 512)
        } catch { /* gone meanwhile */ }
      }
    }
  }
  return size
}
