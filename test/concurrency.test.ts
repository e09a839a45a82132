/**
 * Concurrent writers to many files at once. Writes to different files are applied in parallel,
 * each through a cached descriptor; this once let a descriptor be closed (cache eviction) while a
 * write was using it, so the write landed in whichever file reused the number. Every file must
 * end up with exactly its own data, through the mount and in the data directory.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import { startPrimary, assertCleanSlate, cleanupAll, timed, execOk, type Primary } from './helpers'

const t = suite('concurrency')
const FILES = 150     // well past the descriptor cache's 64
const ROUNDS = 4
const CHUNK = 32 * 1024

/** The bytes file `f` holds in round `r`: recognisable per file and per round. */
function expected (f: number, r: number): Buffer {
  const b = Buffer.alloc(CHUNK)
  for (let i = 0; i < CHUNK; i += 8) b.writeUInt32LE(f, i), b.writeUInt32LE(r, i + 4)
  return b
}

// Runs in a child process: every round writes one chunk to every file, all files at once.
const WRITER = `
const fsp = require('fs/promises'); const path = require('path')
const [dir, FILES, ROUNDS, CHUNK] = [process.argv[1], +process.argv[2], +process.argv[3], +process.argv[4]]
function expected (f, r) { const b = Buffer.alloc(CHUNK); for (let i = 0; i < CHUNK; i += 8) { b.writeUInt32LE(f, i); b.writeUInt32LE(r, i + 4) } return b }
;(async () => {
  const handles = await Promise.all(Array.from({ length: FILES }, (_, f) => fsp.open(path.join(dir, 'f' + f), 'w')))
  for (let r = 0; r < ROUNDS; r++) await Promise.all(handles.map((h, f) => h.write(expected(f, r), 0, CHUNK, r * CHUNK)))
  await Promise.all(handles.map((h) => h.close()))
})().catch((e) => { console.error(e.message); process.exit(1) })
`

let primary: Primary | undefined

t.after(async () => { await cleanupAll() })

t('many files written concurrently each hold exactly their own data', timed(180_000, async () => {
  primary = await startPrimary()
  const dir = path.join(primary.mount, 'many')
  await fsp.mkdir(dir)
  await execOk(process.execPath, ['-e', WRITER, dir, String(FILES), String(ROUNDS), String(CHUNK)], { timeoutMs: 120_000 })
  const check = async (root: string, where: string): Promise<void> => {
    for (let f = 0; f < FILES; f++) {
      const got = await fsp.readFile(path.join(root, 'many', `f${f}`))
      assert.is(got.length, ROUNDS * CHUNK, `${where}: size of f${f}`)
      for (let r = 0; r < ROUNDS; r++) {
        if (!got.subarray(r * CHUNK, (r + 1) * CHUNK).equals(expected(f, r))) {
          assert.unreachable(`${where}: f${f} round ${r} holds another file's data (first words ${got.readUInt32LE(r * CHUNK)}, ${got.readUInt32LE(r * CHUNK + 4)})`)
        }
      }
    }
  }
  await check(primary.mount, 'through the mount')
  const { data } = primary
  await primary.stop()
  primary = undefined
  await check(data, 'in the data directory after stop')
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
