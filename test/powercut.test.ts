/**
 * Power cuts (issue 16): a few rounds of the soak in bench/powercut.ts. Each round puts a Primary's
 * SRL (state directory) and data directory on two fresh loop-mounted ext4 images, runs one-record
 * steps through the mount (creates, writes, renames over files, unlinks, hard links, mkdir, rmdir,
 * directory renames, truncates, chmods; names drawn from a small pool, so they are reused) with an
 * fsync every 9 steps, and cuts power to both at a random instant, during a step, with ext4's
 * shutdown ioctl (nothing not yet durable reaches the disk); then kill -9, remount, restart. Now
 * and then the data filesystem commits its journal right after an fsync, so its names run ahead of
 * the last checkpoint: replay must not apply a namespace record again (the data cursor,
 * src/rvg/replay-plan.ts). What must hold, every round: the Primary starts; its data directory is
 * the tree after a prefix of the steps; every step acknowledged before a completed fsync is in it.
 * The second test adds a Secondary on its own images, cut at another instant: it must also start,
 * catch up with the restarted Primary and end with its tree.
 *
 * Seed: POWERCUT_SEED (default 1000, so CI runs the same workload; the cut instants vary with
 * timing); more rounds with `node dist/bench/powercut.js --rounds 100`.
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

const ROUNDS = 5

t(`${ROUNDS} power cuts at random instants: the Primary starts, its tree is a prefix of the steps, every fsynced step is there`, timed(240_000, async () => {
  await assertLoopAvailable()
  const seed = Number(process.env.POWERCUT_SEED ?? 1000)
  const dirs = await tmpdirs('powercut')
  const r = await exec(process.execPath, [path.join(repoRoot(), 'dist', 'bench', 'powercut.js'), '--rounds', String(ROUNDS), '--seed', String(seed), '--dir', dirs.root], { timeoutMs: 230_000 })
  const ctx = `seed ${seed} (replay: POWERCUT_SEED=${seed} npm test, or node dist/bench/powercut.js --seed ${seed} --rounds ${ROUNDS})\n${r.stdout}${r.stderr}`
  assert.is(r.code, 0, `the soak ran: ${ctx}`)
  console.log(r.stdout.trim().split('\n').pop())
  assert.match(r.stdout, new RegExp(`powercut: exact ${ROUNDS} \\(of ${ROUNDS}\\)`), `every round exact: ${ctx}`)
}))

const SEC_ROUNDS = 3

t(`${SEC_ROUNDS} power cuts of a Primary and its Secondary at random instants: both start, the Primary's tree is a prefix, the Secondary converges to it`, timed(240_000, async () => {
  await assertLoopAvailable()
  const seed = Number(process.env.POWERCUT_SEED ?? 1000) + 1
  const dirs = await tmpdirs('powercut-sec')
  const r = await exec(process.execPath, [path.join(repoRoot(), 'dist', 'bench', 'powercut.js'), '--secondary', '--rounds', String(SEC_ROUNDS), '--seed', String(seed), '--dir', dirs.root], { timeoutMs: 230_000 })
  const ctx = `seed ${seed} (replay: node dist/bench/powercut.js --secondary --seed ${seed} --rounds ${SEC_ROUNDS})\n${r.stdout}${r.stderr}`
  assert.is(r.code, 0, `the soak ran: ${ctx}`)
  console.log(r.stdout.trim().split('\n').pop())
  assert.match(r.stdout, new RegExp(`powercut: exact ${SEC_ROUNDS} \\(of ${SEC_ROUNDS}\\)`), `every round exact, every Secondary converged: ${ctx}`)
}))

t('leaves no mounts, loop devices or daemons behind', timed(60_000, assertCleanSlate))

t.run()
