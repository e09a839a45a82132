/**
 * Child process for the "stat hard-linked files" workload (the cost of issue 18's mitigation).
 *
 *   node dist/bench/stat-walk.js prep ROOT FILES FILES_PER_DIR
 *       mkdir ROOT/dNNNN and create FILES empty files (untimed by the harness).
 *   node dist/bench/stat-walk.js stat ROOT FILES FILES_PER_DIR ROUNDS NLINK
 *       lstat every file ROUNDS times, checking that each has NLINK links; timed here.
 *   node dist/bench/stat-walk.js link ROOT FILES FILES_PER_DIR
 *       give every file a second name (fNNN.l) beside it.
 *
 * Through the mount, the attributes of a file with more than one link are not cached by the
 * kernel (src/native/fuse_bridge.c change 14), so each lstat of such a file is a request to the
 * daemon; a file with one link is cached for libfuse's 1 s. Prints one JSON line.
 */
import * as fs from 'fs'
import * as path from 'path'

function intArg (s: string | undefined, name: string): number {
  const n = Number(s)
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`bad ${name}: ${s}`)
  return n
}

function main (): void {
  const [cmd, root, filesS, perDirS, roundsS, nlinkS] = process.argv.slice(2)
  if (!root) throw new Error('usage: stat-walk prep|stat|link ROOT FILES FILES_PER_DIR [ROUNDS NLINK]')
  const files = intArg(filesS, 'FILES')
  const perDir = intArg(perDirS, 'FILES_PER_DIR')
  const file = (f: number): string => path.join(root, `d${String(Math.floor(f / perDir)).padStart(4, '0')}`, `f${f}`)
  if (cmd === 'prep') {
    for (let f = 0; f < files; f++) {
      if (f % perDir === 0) fs.mkdirSync(path.dirname(file(f)))
      fs.writeFileSync(file(f), '')
    }
    process.stdout.write(JSON.stringify({ files }) + '\n')
  } else if (cmd === 'link') {
    for (let f = 0; f < files; f++) fs.linkSync(file(f), file(f) + '.l')
    process.stdout.write(JSON.stringify({ files }) + '\n')
  } else if (cmd === 'stat') {
    const rounds = intArg(roundsS, 'ROUNDS')
    const nlink = intArg(nlinkS, 'NLINK')
    const t0 = process.hrtime.bigint()
    for (let r = 0; r < rounds; r++) {
      for (let f = 0; f < files; f++) {
        const st = fs.lstatSync(file(f))
        if (st.nlink !== nlink) throw new Error(`${file(f)} has ${st.nlink} links, expected ${nlink}`)
      }
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    process.stdout.write(JSON.stringify({ stats: files * rounds, seconds, statsPerSec: files * rounds / seconds }) + '\n')
  } else {
    throw new Error(`unknown command ${cmd}`)
  }
}

try {
  main()
} catch (e) {
  process.stderr.write(`stat-walk: ${(e as Error).message}\n`)
  process.exit(1)
}
