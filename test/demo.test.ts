/**
 * The README's first command: `npm run demo` (replicafs demo) runs its Primary and Secondary on
 * loopback, a workload, a kill -9 and recovery, an IBC-consistent snapshot and an online verify,
 * and ends with every check passed, leaving nothing mounted or running.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as path from 'path'
import { assertCleanSlate, cleanupAll, isolated, timed, cli, tmpdirs, registerMount, registerState, isMounted, pidsWithArg, describeFailure } from './helpers'

const t = suite('demo')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`demo.test: cleanup had to force: ${forced.join('; ')}`)
})

t('replicafs demo: every check passes; nothing is left mounted or running', isolated(240_000, async () => {
  const dirs = await tmpdirs('demo')
  const work = path.join(dirs.root, 'work')
  for (const host of ['primary', 'secondary']) {
    registerMount(path.join(work, host, 'mnt'))
    registerState(path.join(work, host, 'state'))
  }
  const r = await cli(['demo', '--workdir', work], { timeoutMs: 200_000 })
  assert.is(r.code, 0, describeFailure(r))
  assert.match(r.stdout, /Done: every check passed\./)
  for (const host of ['primary', 'secondary']) {
    assert.not.ok(await isMounted(path.join(work, host, 'mnt')), `${host}/mnt unmounted`)
    assert.is(pidsWithArg(path.join(work, host, 'state')).length, 0, `no ${host} daemon left`)
  }
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
