/**
 * Child process for the "4 KiB random writes + fsync" workload. Not the daemon:
 * blocking sync calls are the point here.
 *
 *   node dist/bench/fsync-writer.js prep FILE BYTES
 *       Write BYTES of deterministic pseudo-random data to FILE (1 MiB writes),
 *       fsync, close. Real data, not fallocate: later overwrites then change
 *       no block allocation on the raw filesystem either.
 *   node dist/bench/fsync-writer.js run FILE BYTES OPS fdatasync|fsync SEED
 *       OPS times: pwrite 4 KiB at a random 4 KiB-aligned offset below BYTES,
 *       then fdatasync (or fsync) the file. Only this loop is timed. The
 *       offsets and contents depend only on SEED, so the final file is
 *       identical in every column; its sha256 is printed (computed after the
 *       timed loop) so the harness can check that.
 *
 * Prints one JSON line on stdout.
 */
import * as fs from 'fs'
import * as crypto from 'crypto'

const BLOCK = 4096
const CHUNK = 1024 * 1024

/** mulberry32: small deterministic PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

function fill(buf: Buffer, next: () => number): void {
  for (let i = 0; i + 4 <= buf.length; i += 4) buf.writeUInt32LE(next(), i)
}

function intArg(s: string | undefined, name: string): number {
  const n = Number(s)
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`bad ${name}: ${s}`)
  return n
}

function prep(file: string, bytes: number): void {
  const next = rng(0x5eed)
  const buf = Buffer.alloc(CHUNK)
  const fd = fs.openSync(file, 'w')
  const t0 = process.hrtime.bigint()
  try {
    for (let off = 0; off < bytes; off += CHUNK) {
      fill(buf, next)
      const n = Math.min(CHUNK, bytes - off)
      let done = 0
      while (done < n) done += fs.writeSync(fd, buf, done, n - done, off + done)
    }
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  process.stdout.write(JSON.stringify({ bytes, seconds }) + '\n')
}

function runOps(file: string, bytes: number, ops: number, sync: string, seed: number): void {
  if (sync !== 'fdatasync' && sync !== 'fsync') throw new Error(`bad sync mode: ${sync}`)
  const st = fs.statSync(file)
  if (st.size !== bytes) throw new Error(`${file} is ${st.size} bytes, expected ${bytes} (run prep first)`)
  const blocks = Math.floor(bytes / BLOCK)
  const next = rng(seed)
  // Everything random is generated before the clock starts.
  const offsets = new Array<number>(ops)
  const data = Buffer.alloc(ops * BLOCK)
  for (let i = 0; i < ops; i++) offsets[i] = (next() % blocks) * BLOCK
  fill(data, next)
  const lat = new Float64Array(ops)
  const doSync = sync === 'fsync' ? fs.fsyncSync : fs.fdatasyncSync
  const fd = fs.openSync(file, 'r+')
  let seconds: number
  try {
    const t0 = process.hrtime.bigint()
    let prev = t0
    for (let i = 0; i < ops; i++) {
      const n = fs.writeSync(fd, data, i * BLOCK, BLOCK, offsets[i])
      if (n !== BLOCK) throw new Error(`short write: ${n} of ${BLOCK} bytes`)
      doSync(fd)
      const now = process.hrtime.bigint()
      lat[i] = Number(now - prev) / 1e6
      prev = now
    }
    seconds = Number(prev - t0) / 1e9
  } finally {
    fs.closeSync(fd)
  }
  const sorted = Array.from(lat).sort((a, b) => a - b)
  const pct = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
  const hash = crypto.createHash('sha256')
  const rfd = fs.openSync(file, 'r')
  try {
    const buf = Buffer.alloc(CHUNK)
    for (;;) {
      const n = fs.readSync(rfd, buf, 0, CHUNK, null)
      if (n === 0) break
      hash.update(buf.subarray(0, n))
    }
  } finally {
    fs.closeSync(rfd)
  }
  process.stdout.write(JSON.stringify({
    ops, seconds, opsPerSec: ops / seconds,
    p50Ms: pct(50), p99Ms: pct(99), maxMs: sorted[sorted.length - 1],
    sha256: hash.digest('hex'),
  }) + '\n')
}

function main(): void {
  const [cmd, file, ...rest] = process.argv.slice(2)
  if (!file) throw new Error('usage: fsync-writer prep FILE BYTES | run FILE BYTES OPS fdatasync|fsync SEED')
  if (cmd === 'prep') prep(file, intArg(rest[0], 'BYTES'))
  else if (cmd === 'run') runOps(file, intArg(rest[0], 'BYTES'), intArg(rest[1], 'OPS'), rest[2] ?? 'fdatasync', intArg(rest[3] ?? '1', 'SEED'))
  else throw new Error(`unknown command ${cmd}`)
}

try {
  main()
} catch (e) {
  process.stderr.write(`fsync-writer: ${(e as Error).message}\n`)
  process.exit(1)
}
