/**
 * A private copy of the built replicafs (bin/, dist/src/, dist/bench/,
 * native-prebuilds/, package.json, node_modules/) taken when the run starts.
 * Daemons and helper processes run from it, so a rebuild or `npm ci` in the
 * working tree during a run (e.g. tests running in another terminal) cannot
 * swap the daemon out halfway through, or delete it. The copy is a real
 * package root: replicafs finds its native prebuilds by walking up to the
 * package.json named "replicafs".
 */
import * as fs from 'fs'
import * as path from 'path'
import { createHash } from 'crypto'
import { runOk } from './proc'

const PARTS = ['package.json', 'bin', 'native-prebuilds', 'node_modules', path.join('dist', 'src'), path.join('dist', 'bench')]

/** Hash of every .js file under dist/src and dist/bench (paths and contents). */
export function buildHash(root: string): string {
  const h = createHash('sha256')
  const walk = (dir: string): void => {
    let ents: fs.Dirent[]
    try {
      ents = fs.readdirSync(dir, { withFileTypes: true })
    } catch {
      return
    }
    for (const e of ents.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(dir, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.name.endsWith('.js')) h.update(path.relative(root, p)).update(fs.readFileSync(p))
    }
  }
  walk(path.join(root, 'dist', 'src'))
  walk(path.join(root, 'dist', 'bench'))
  return h.digest('hex').slice(0, 16)
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms))
}

/**
 * Copy the package to `dest` (which must not exist). Retries while the build
 * in `repo` changes under the copy (a tsc run in progress). Returns the build
 * hash of the copy.
 */
export async function snapshotPackage(repo: string, dest: string, log: (s: string) => void): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const before = buildHash(repo)
    fs.rmSync(dest, { recursive: true, force: true })
    fs.mkdirSync(path.join(dest, 'dist'), { recursive: true })
    for (const part of PARTS) {
      const src = path.join(repo, part)
      if (!fs.existsSync(src)) continue // the caller checks for what it needs
      await runOk(['cp', '-a', src, path.join(dest, part)], { timeoutMs: 300_000 })
    }
    const after = buildHash(repo)
    const copied = buildHash(dest)
    if (before === after && after === copied) return copied
    if (attempt >= 5) throw new Error(`the build in ${repo} kept changing while it was being copied; try again when no build is running`)
    log(`the build changed while it was being copied (a tsc run?); retrying in 3 s`)
    await sleep(3000)
  }
}
