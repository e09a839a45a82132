/**
 * Real programs on the mount: git, tar and sqlite3 do every kind of file operation and check
 * their own results; we check them again in the data directory after the daemon stops.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPrimary, assertCleanSlate, cleanupAll, timed, execOk, exec, repoRoot, describeFailure, type Primary
} from './helpers'

const t = suite('programs')
let primary: Primary | undefined
function P (): Primary {
  if (primary === undefined) throw new Error('no primary running (the "primary starts" test failed)')
  return primary
}

const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 'Test',
  GIT_AUTHOR_EMAIL: 'test@example.invalid',
  GIT_COMMITTER_NAME: 'Test',
  GIT_COMMITTER_EMAIL: 'test@example.invalid',
  GIT_CONFIG_NOSYSTEM: '1',
  HOME: '/nonexistent'
}
const SQL_TXNS = 3000

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`programs.test: cleanup had to force: ${forced.join('; ')}`)
})

t('primary starts', timed(120_000, async () => {
  primary = await startPrimary()
}))

t('git init, add, commit, fsck --full', timed(120_000, async () => {
  const repo = path.join(P().mount, 'repo')
  await fsp.mkdir(repo)
  for (let i = 0; i < 40; i++) {
    await fsp.mkdir(path.join(repo, `dir${i % 5}`), { recursive: true })
    await fsp.writeFile(path.join(repo, `dir${i % 5}`, `file${i}.txt`), `content of file ${i}\n`.repeat(i + 1))
  }
  await fsp.writeFile(path.join(repo, 'big.bin'), Buffer.alloc(300_000, 7))
  const git = async (...args: string[]): Promise<string> => (await execOk('git', args, { cwd: repo, env: GIT_ENV, timeoutMs: 60_000 })).stdout
  await git('init', '-q')
  await git('add', '-A')
  await git('commit', '-q', '-m', 'first')
  await fsp.appendFile(path.join(repo, 'dir0', 'file0.txt'), 'changed\n')
  await fsp.rename(path.join(repo, 'dir1', 'file1.txt'), path.join(repo, 'dir1', 'renamed.txt'))
  await git('add', '-A')
  await git('commit', '-q', '-m', 'second')
  await git('gc', '-q')
  await git('fsck', '--full', '--strict')
  assert.is((await git('status', '--porcelain')).trim(), '', 'working tree clean')
  assert.is((await git('rev-list', '--count', 'HEAD')).trim(), '2')
}))

t('tar -x of a ~1000-file source tree, then tar --compare and diff -r', timed(240_000, async () => {
  const root = repoRoot()
  const tarball = path.join(P().root, 'tree.tar')
  await execOk('tar', ['-cf', tarball, '--exclude=src/native/build', '--exclude=node_modules/typescript', '--exclude=node_modules/.cache', '-C', root, 'src', 'node_modules'], { timeoutMs: 120_000 })
  const list = await execOk('tar', ['-tf', tarball], { timeoutMs: 60_000 })
  const entries = list.stdout.split('\n').filter((l) => l !== '').length
  assert.ok(entries >= 900, `the tarball has ${entries} entries (want ~1000)`)
  const dest = path.join(P().mount, 'tree')
  await fsp.mkdir(dest)
  await execOk('tar', ['-xf', tarball, '-C', dest], { timeoutMs: 180_000 })
  const cmp = await exec('tar', ['--compare', '-f', tarball, '-C', dest], { timeoutMs: 120_000 })
  assert.is(cmp.code, 0, `tar --compare through the mount:\n${describeFailure(cmp)}`)
  const diff = await exec('diff', ['-r', '--no-dereference', path.join(root, 'src'), path.join(dest, 'src')], { timeoutMs: 120_000 })
  assert.is(diff.code, 0, `diff -r src:\n${describeFailure(diff)}`)
}))

t(`sqlite3: ${SQL_TXNS} small transactions, integrity_check ok`, timed(300_000, async () => {
  const db = path.join(P().mount, 'test.db')
  const lines = ['CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);']
  for (let i = 0; i < SQL_TXNS; i++) lines.push(`BEGIN; INSERT INTO t(v) VALUES('row ${i} ${'x'.repeat(i % 200)}'); COMMIT;`)
  lines.push('BEGIN; DELETE FROM t WHERE id % 10 = 0; COMMIT;')
  lines.push('SELECT count(*) FROM t;')
  lines.push('PRAGMA integrity_check;')
  const r = await execOk('sqlite3', ['-bail', db], { input: lines.join('\n') + '\n', timeoutMs: 280_000 })
  assert.equal(r.stdout.trim().split('\n'), [String(SQL_TXNS - SQL_TXNS / 10), 'ok'])
  const again = await execOk('sqlite3', [db, 'PRAGMA integrity_check; SELECT count(*), max(id) FROM t;'], { timeoutMs: 60_000 })
  assert.equal(again.stdout.trim().split('\n'), ['ok', `${SQL_TXNS - SQL_TXNS / 10}|${SQL_TXNS - 1}`])
}))

t('after stop, the data dir holds the same git repo, tree and database', timed(240_000, async () => {
  const p = P()
  await p.stop()
  primary = undefined
  const repo = path.join(p.data, 'repo')
  await execOk('git', ['fsck', '--full', '--strict'], { cwd: repo, env: GIT_ENV, timeoutMs: 60_000 })
  const st = await execOk('git', ['status', '--porcelain'], { cwd: repo, env: GIT_ENV, timeoutMs: 60_000 })
  assert.is(st.stdout.trim(), '')
  const cmp = await exec('tar', ['--compare', '-f', path.join(p.root, 'tree.tar'), '-C', path.join(p.data, 'tree')], { timeoutMs: 120_000 })
  assert.is(cmp.code, 0, `tar --compare in the data dir:\n${describeFailure(cmp)}`)
  const db = await execOk('sqlite3', [path.join(p.data, 'test.db'), 'PRAGMA integrity_check; SELECT count(*) FROM t;'], { timeoutMs: 60_000 })
  assert.equal(db.stdout.trim().split('\n'), ['ok', String(SQL_TXNS - SQL_TXNS / 10)])
  const forced = await cleanupAll()
  assert.equal(forced, [], 'nothing left to force')
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
