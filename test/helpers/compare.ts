/**
 * Comparing what the mount shows with what the data directory holds.
 */
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'

export async function sha256File (file: string): Promise<string> {
  const h = crypto.createHash('sha256')
  const fh = await fsp.open(file, 'r')
  try {
    const buf = Buffer.alloc(1 << 20)
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null)
      if (bytesRead === 0) break
      h.update(buf.subarray(0, bytesRead))
    }
  } finally {
    await fh.close()
  }
  return h.digest('hex')
}

export interface StatSummary {
  type: string
  mode: string
  uid: number
  gid: number
  size: number
  nlink: number
  /** mtime in whole microseconds (FUSE carries µs). */
  mtimeUs: bigint
}

function typeOf (st: fs.BigIntStats): string {
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isFIFO()) return 'fifo'
  if (st.isSocket()) return 'socket'
  if (st.isCharacterDevice()) return 'chardev'
  if (st.isBlockDevice()) return 'blockdev'
  return 'unknown'
}

export async function summary (p: string): Promise<StatSummary> {
  const st = await fsp.lstat(p, { bigint: true })
  return {
    type: typeOf(st),
    mode: (Number(st.mode) & 0o7777).toString(8),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    nlink: Number(st.nlink),
    mtimeUs: st.mtimeNs / 1000n
  }
}

/**
 * Compares one path's metadata (and content / link target) under `a` and `b`; returns a list of
 * differences, empty when equal. Directory sizes and nlink are compared too: the mount passes the
 * data directory's lstat through.
 */
export async function diffEntry (a: string, b: string, rel: string): Promise<string[]> {
  const diffs: string[] = []
  const sa = await summary(path.join(a, rel))
  const sb = await summary(path.join(b, rel))
  for (const k of Object.keys(sa) as Array<keyof StatSummary>) {
    if (sa[k] !== sb[k]) diffs.push(`${rel}: ${k} ${String(sa[k])} (mount) != ${String(sb[k])} (data)`)
  }
  if (sa.type === 'file' && sb.type === 'file') {
    const [ha, hb] = await Promise.all([sha256File(path.join(a, rel)), sha256File(path.join(b, rel))])
    if (ha !== hb) diffs.push(`${rel}: content differs`)
  }
  if (sa.type === 'symlink' && sb.type === 'symlink') {
    const [la, lb] = await Promise.all([fsp.readlink(path.join(a, rel)), fsp.readlink(path.join(b, rel))])
    if (la !== lb) diffs.push(`${rel}: link target ${la} (mount) != ${lb} (data)`)
  }
  return diffs
}

/** All paths below `root` (relative, sorted), directories included. */
export async function walk (root: string): Promise<string[]> {
  const out: string[] = []
  async function rec (rel: string): Promise<void> {
    const ents = await fsp.readdir(path.join(root, rel), { withFileTypes: true })
    for (const e of ents) {
      const r = rel === '' ? e.name : `${rel}/${e.name}`
      out.push(r)
      if (e.isDirectory()) await rec(r)
    }
  }
  await rec('')
  return out.sort()
}

/** Every difference between the tree seen through the mount and the data directory. */
export async function diffTrees (mount: string, data: string): Promise<string[]> {
  const [ma, da] = await Promise.all([walk(mount), walk(data)])
  const diffs: string[] = []
  const sa = new Set(ma)
  const sb = new Set(da)
  for (const p of ma) if (!sb.has(p)) diffs.push(`${p}: only in the mount`)
  for (const p of da) if (!sa.has(p)) diffs.push(`${p}: only in the data dir`)
  for (const p of ma) if (sb.has(p)) diffs.push(...await diffEntry(mount, data, p))
  diffs.push(...await diffEntry(mount, data, '.'))
  return diffs
}
