/**
 * Child process for the "create and delete many small files" workload.
 *
 *   node dist/bench/small-files.js create ROOT FILES FILES_PER_DIR BYTES
 *       mkdir ROOT/dNNNN (FILES / FILES_PER_DIR directories) and create FILES
 *       files of BYTES bytes each (open O_CREAT|O_TRUNC, one write, close).
 *   node dist/bench/small-files.js delete ROOT FILES FILES_PER_DIR
 *       unlink every file, rmdir every directory (ROOT itself stays).
 *
 * No fsync: this measures what an application sees (e.g. `git checkout`,
 * `rm -rf`); the harness syncs the filesystem afterwards, outside this
 * process, and reports that time separately. The whole phase is timed inside
 * this process, so Node's start-up is not counted. Prints one JSON line.
 */
import * as fs from 'fs'
import * as path from 'path'

function intArg(s: string | undefined, name: string): number {
  const n = Number(s)
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`bad ${name}: ${s}`)
  return n
}

function dirName(root: string, d: number): string {
  return path.join(root, `d${String(d).padStart(4, '0')}`)
}

function main(): void {
  const [cmd, root, filesS, perDirS, bytesS] = process.argv.slice(2)
  if (!root) throw new Error('usage: small-files create|delete ROOT FILES FILES_PER_DIR [BYTES]')
  const files = intArg(filesS, 'FILES')
  const perDir = intArg(perDirS, 'FILES_PER_DIR')
  const dirs = Math.ceil(files / perDir)
  let seconds: number
  if (cmd === 'create') {
    const data = Buffer.alloc(intArg(bytesS, 'BYTES'), 'replicafs small file\n')
    const t0 = process.hrtime.bigint()
    for (let d = 0; d < dirs; d++) {
      const dir = dirName(root, d)
      fs.mkdirSync(dir)
      for (let f = d * perDir; f < Math.min(files, (d + 1) * perDir); f++) {
        fs.writeFileSync(path.join(dir, `f${f}`), data)
      }
    }
    seconds = Number(process.hrtime.bigint() - t0) / 1e9
  } else if (cmd === 'delete') {
    const t0 = process.hrtime.bigint()
    for (let d = 0; d < dirs; d++) {
      const dir = dirName(root, d)
      for (let f = d * perDir; f < Math.min(files, (d + 1) * perDir); f++) fs.unlinkSync(path.join(dir, `f${f}`))
      fs.rmdirSync(dir)
    }
    seconds = Number(process.hrtime.bigint() - t0) / 1e9
  } else {
    throw new Error(`unknown command ${cmd}`)
  }
  process.stdout.write(JSON.stringify({ files, dirs, seconds, filesPerSec: files / seconds }) + '\n')
}

try {
  main()
} catch (e) {
  process.stderr.write(`small-files: ${(e as Error).message}\n`)
  process.exit(1)
}
