/**
 * test/fixtures/fsprobe.c, built with the system's C compiler into a test's directory and run,
 * as root or as another user, to make single system calls with exact sizes on a mount.
 */
import * as fsp from 'fs/promises'
import * as path from 'path'
import { execOk, repoRoot } from './util'

/** The user the "any local user" tests act as (nobody, with its group only). */
export const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups', '--']

/** Builds fsprobe into `dir` (which other users must be able to reach) and returns its path. */
export async function buildProbe (dir: string): Promise<string> {
  const bin = path.join(dir, 'fsprobe')
  const src = path.join(repoRoot(), 'test', 'fixtures', 'fsprobe.c')
  await execOk('cc', ['-O2', '-Wall', '-o', bin, src], { timeoutMs: 60_000 })
  await fsp.chmod(bin, 0o755)
  return bin
}

/** Runs fsprobe (as `nobody` when asked) and returns its output lines. */
export async function probe (bin: string, args: Array<string | number>, opts: { nobody?: boolean } = {}): Promise<string[]> {
  const argv = args.map(String)
  const r = opts.nobody === true
    ? await execOk('setpriv', [...NOBODY, bin, ...argv], { timeoutMs: 60_000 })
    : await execOk(bin, argv, { timeoutMs: 60_000 })
  return r.stdout.split('\n').filter((l) => l !== '')
}
