/**
 * Power cuts (issue 16): a few rounds of the soak in bench/powercut.ts. Each round puts a Primary's
 * data and state directories on a fresh loop-mounted ext4 image, runs one-record steps through the
 * mount with an fsync every 9, cuts power with ext4's shutdown ioctl (nothing not yet durable reaches
 * the disk), kill -9s the daemon, remounts and restarts. What must hold, every round: the Primary
 * starts; its data directory is the tree after a prefix of the steps; every step acknowledged before
 * a completed fsync is in it. The cut keeps the boot id, so this also pins that a remounted
 * filesystem (another unique mount id) is treated as after a reboot: replay from the last
 * checkpoint, not from the last non-WRITE record as after a kill -9.
 *
 * Seed: POWERCUT_SEED (default 1000, so CI runs the same workload); more rounds with
 * `node dist/bench/powercut.js --rounds 100`.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as path from 'path'
import { assertCleanSlate, cleanupAll, timed, exec, repoRoot, tmpdirs } from './helpers'
import { assertLoopAvailable } from './helpers/loopfs'

const t = suite('powercut')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`powercut.test: cleanup had to force: ${forced.join('; ')}`)
})

const ROUNDS = 6

t(`${ROUNDS} power cuts on the same boot: the Primary starts, its tree is a prefix of the steps, every fsynced step is there`, timed(240_000, async () => {
  await assertLoopAvailable()
  const seed = Number(process.env.POWERCUT_SEED ?? 1000)
  const dirs = await tmpdirs('powercut')
  const r = await exec(process.execPath, [path.join(repoRoot(), 'dist', 'bench', 'powercut.js'), '--rounds', String(ROUNDS), '--seed', String(seed), '--dir', dirs.root], { timeoutMs: 230_000 })
  const ctx = `seed ${seed} (replay: POWERCUT_SEED=${seed} npm test, or node dist/bench/powercut.js --seed ${seed} --rounds ${ROUNDS})\n${r.stdout}${r.stderr}`
  assert.is(r.code, 0, `the soak ran: ${ctx}`)
  console.log(r.stdout.trim().split('\n').pop())
  assert.match(r.stdout, new RegExp(`powercut: exact ${ROUNDS} \\(of ${ROUNDS}\\)`), `every round exact: ${ctx}`)
}))

t('leaves no mounts, loop devices or daemons behind', timed(60_000, assertCleanSlate))

t.run()
