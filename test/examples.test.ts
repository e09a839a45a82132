/**
 * examples/*.sh run as a user would run them (bash, real daemons on loopback), each ending with the
 * checks it claims; here they must exit 0 and print their OK line. Each runs in a temporary
 * directory of ours, so cleanup finds every daemon and mount even if a script dies half-way.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as path from 'path'
import {
  assertCleanSlate, cleanupAll, timed, exec, repoRoot, describeFailure, tmpdirs, registerMount, registerState, assertFuseAvailable
} from './helpers'

const t = suite('examples')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`examples.test: cleanup had to force: ${forced.join('; ')}`)
})

async function runExample (name: string, okLine: RegExp): Promise<void> {
  await assertFuseAvailable()
  const dirs = await tmpdirs(`ex-${name}`)
  const work = path.join(dirs.root, 'work')
  for (const side of ['primary', 'secondary']) {
    registerMount(path.join(work, side, 'mnt'))
    registerState(path.join(work, side, 'state'))
  }
  const r = await exec('bash', [path.join(repoRoot(), 'examples', `${name}.sh`), work], { cwd: repoRoot(), timeoutMs: 240_000 })
  assert.is(r.code, 0, `${name}.sh failed:\n${describeFailure(r)}`)
  assert.match(r.stdout, okLine, `${name}.sh did not print its OK line:\n${r.stdout}`)
}

t('examples/local-pair.sh: both ends on one machine, identical data directories', timed(300_000, async () => {
  await runExample('local-pair', /^local-pair: OK/m)
}))

t('examples/consistent-backup.sh: sync && ibc-send, snapshot on the frozen Secondary, tar while replicating, integrity_check ok', timed(300_000, async () => {
  await runExample('consistent-backup', /^consistent-backup: OK/m)
}))

t('examples/offhost-report.sh: a report from a Secondary snapshot equals the ledger at the mark', timed(300_000, async () => {
  await runExample('offhost-report', /^offhost-report: OK/m)
}))

t('examples/failover.sh: takeover after kill -9 of the Primary; the old Primary refuses writes, then is failed back with identical data', timed(300_000, async () => {
  await runExample('failover', /^failover: OK/m)
}))

t('leaves no FUSE mounts and no daemons behind', timed(60_000, async () => {
  await assertCleanSlate()
}))

t.run()
