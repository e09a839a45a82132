/**
 * sys.hashFile (src/native/sys.c, vendored xxHash v0.8.2): the chunk hashes of synchronization by
 * difference read and computed on libuv's pool. They must be the bytes src/sync/hash.ts chunkHash
 * (@node-rs/xxhash) gives, chunk by chunk, since one end may hash with either; and the identity it
 * returns is the file's as lstat sees it.
 */
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { sys } from '../src/native'
import { chunkHash, fileHashes, HASH_BYTES } from '../src/sync/hash'
import { SYNC_CHUNK_BYTES } from '../src/limits'

const C = SYNC_CHUNK_BYTES

async function hashFile (p: string, chunk: number): Promise<{ h: Buffer, id: bigint[] }> {
  return await new Promise((resolve, reject) => sys.hashFile(p, chunk, (err, h, id) => err !== null ? reject(err) : resolve({ h: h!, id: id! })))
}

/** chunkHash of each `chunk` bytes of `b`, concatenated. */
function expected (b: Buffer, chunk: number): Buffer {
  const out: Buffer[] = []
  for (let o = 0; o < b.length; o += chunk) out.push(chunkHash(b.subarray(o, Math.min(b.length, o + chunk))))
  return Buffer.concat(out)
}

test('hashFile gives chunkHash\'s bytes for every chunk, at every size around the chunk, and lstat\'s identity', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-hash-'))
  try {
    for (const size of [0, 1, 15, 16, 17, 240, 241, 1024, C - 1, C, C + 1, 3 * C + 5]) {
      const p = path.join(dir, `f${size}`)
      const b = crypto.randomBytes(size)
      fs.writeFileSync(p, b)
      const { h, id } = await hashFile(p, C)
      assert.is(h.length, Math.ceil(size / C) * HASH_BYTES, `size ${size}`)
      assert.ok(h.equals(expected(b, C)), `hashes of a file of ${size} bytes`)
      const st = fs.lstatSync(p, { bigint: true })
      assert.equal(id, [st.ino, st.size, st.mtimeNs, st.ctimeNs], `identity of a file of ${size} bytes`)
      // Other chunk sizes: the same function of the bytes.
      const small = await hashFile(p, 4096)
      assert.ok(small.h.equals(expected(b, 4096)), `4 KiB chunks of ${size} bytes`)
    }
    // A sparse file: its holes read as zeros, hashed as zeros.
    const sparse = path.join(dir, 'sparse')
    const fd = fs.openSync(sparse, 'w')
    fs.writeSync(fd, Buffer.from('end'), 0, 3, 5 * C + 7)
    fs.closeSync(fd)
    const got = await fileHashes(sparse)
    assert.ok(got.h.equals(expected(fs.readFileSync(sparse), C)), 'hashes of a sparse file')
    assert.is(got.id.size, BigInt(5 * C + 10))
    assert.is.not(got.id.ctimeNs, -1n, 'a file left alone did not change while read')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('hashFile refuses what is not a regular file, with the errno, and never blocks on a FIFO', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-hash-'))
  try {
    const codeOf = async (p: string): Promise<string> => await hashFile(p, C).then(() => 'none', (e: NodeJS.ErrnoException) => `${e.code ?? '?'} ${e.syscall ?? '?'} ${e.path === p ? 'path' : String(e.path)}`)
    assert.is(await codeOf(path.join(dir, 'missing')), 'ENOENT open path')
    fs.mkdirSync(path.join(dir, 'd'))
    assert.is(await codeOf(path.join(dir, 'd')), 'EINVAL open path')
    execFileSync('mkfifo', [path.join(dir, 'fifo')])
    assert.is(await codeOf(path.join(dir, 'fifo')), 'EINVAL open path')
    fs.writeFileSync(path.join(dir, 'target'), 'x')
    fs.symlinkSync('target', path.join(dir, 'link'))
    assert.is(await codeOf(path.join(dir, 'link')), 'ELOOP open path', 'a symlink is not followed')
    await fileHashes(path.join(dir, 'missing')).then(() => assert.unreachable('hashed a missing file'), (e: NodeJS.ErrnoException) => assert.is(e.code, 'ENOENT'))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test.run()
