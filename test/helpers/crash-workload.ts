/**
 * Crash-test workload, run as a child process with cwd = a directory on the mount:
 *
 *   node crash-workload.js NFILES CHUNK_BYTES MAX_CHUNKS FSYNC_EVERY
 *
 * Writes chunks round-robin over NFILES files (global chunk j goes to file j % NFILES as that
 * file's chunk floor(j / NFILES), at offset chunk * CHUNK_BYTES, one pwrite each). After every
 * FSYNC_EVERY-th chunk of a file it fsyncs that file and, once fsync has returned, prints
 * "fsynced FILE CHUNK" (chunks 0..CHUNK of FILE are durable). Prints "wrote J" every 50 chunks,
 * "done" at the end, or "error CODE" and exits 1 on the first failure (ENOTCONN after a crash).
 * Synchronous fs calls are fine here: this process is not the one serving the mount.
 */
import * as fs from 'fs'
import { chunkBytes, chunkFileName } from './chunks'

function main (): void {
  const [nfiles, chunkSize, maxChunks, fsyncEvery] = process.argv.slice(2).map(Number)
  const fds: number[] = []
  try {
    for (let f = 0; f < nfiles; f++) fds.push(fs.openSync(chunkFileName(f), 'w', 0o644))
    for (let j = 0; j < maxChunks; j++) {
      const f = j % nfiles
      const i = Math.floor(j / nfiles)
      const buf = chunkBytes(f, i, chunkSize)
      const n = fs.writeSync(fds[f], buf, 0, buf.length, i * chunkSize)
      if (n !== buf.length) throw Object.assign(new Error('short write'), { code: 'SHORT_WRITE' })
      if ((i + 1) % fsyncEvery === 0) {
        fs.fsyncSync(fds[f])
        process.stdout.write(`fsynced ${f} ${i}\n`)
      }
      if (j % 50 === 0) process.stdout.write(`wrote ${j}\n`)
    }
    process.stdout.write('done\n')
  } catch (err) {
    process.stdout.write(`error ${(err as { code?: string }).code ?? String(err)}\n`)
    process.exitCode = 1
  }
}

main()
