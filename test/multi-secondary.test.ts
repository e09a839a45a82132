/**
 * A Primary with several Secondaries (issue 17, "Promises with no test", item 3).
 *
 * - Release: docs/ARCHITECTURE.md, "Release rules with RLINKs": "The Primary keeps every record
 *   until every RLINK has data-acked it, not just network-acked it: `PrimaryRvg.checkpoint`
 *   releases up to `min(applied, min over RLINKs of dackPos)`"; README.md, "Replication": "The SRL
 *   keeps every update until every Secondary has applied it."
 * - Pause of one link: README.md, "Commands": "`replicafs pause --state DIR [--secondary
 *   HOST:PORT]` # stop replicating to one RLINK (or all); the SRL keeps the updates";
 *   docs/ARCHITECTURE.md, "Pause and resume": "pause closes the link with a `REFUSE` and does not
 *   reconnect ... The flag is stored with the RLINK's position, so a paused link stays paused
 *   across restarts. Resume reconnects, and the handshake says where to go on."
 *
 * Two Secondaries, A (rlinks[0]) and B (rlinks[1]), started with the Primary by
 * test/helpers/multi.ts; where the test must stall B or count the Primary's connections to it,
 * B is reached through a test proxy (test/helpers/proxy.ts).
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  assertCleanSlate, cleanupAll, isolated, timed, waitFor, srlDump, type PrimaryStatus, type Secondary
} from './helpers'
import { closeAllProxies } from './helpers/proxy'
import { snapshotTree, diffSnapshots, assertNoDiffs } from './helpers/replica-tree'
import { withMulti, waitRlink, pauseOrResume, newestSeq, type Multi } from './helpers/multi'

const t = suite('multi-secondary')

t.after(async () => {
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`multi-secondary.test: cleanup had to force: ${forced.join('; ')}`)
})

/** The Primary's --srl-size: 4 MiB, so writing past half of it triggers a checkpoint. */
const SRL = '4M'
const KiB = 1024

/** Some updates on the Primary: a directory and `n` files of `size` bytes under it. Returns their names. */
async function writeFiles (m: Multi, dir: string, n: number, size: number): Promise<string[]> {
  await fsp.mkdir(path.join(m.primary.mount, dir))
  const names: string[] = []
  for (let i = 0; i < n; i++) {
    const rel = path.join(dir, `f${i}`)
    await fsp.writeFile(path.join(m.primary.mount, rel), Buffer.alloc(size, `${dir}/${i};`))
    names.push(rel)
  }
  return names
}

/** Secondary `s` has none of `names`, in its data directory or through its mount. */
function assertAbsent (s: Secondary, names: string[], what: string): void {
  for (const rel of names) {
    assert.not.ok(fs.existsSync(path.join(s.data, rel)), `${what}: ${rel} is not in its data directory`)
    assert.not.ok(fs.existsSync(path.join(s.mount, rel)), `${what}: ${rel} does not show through its mount`)
  }
}

/** Both Secondaries' data directories and mounts hold exactly the Primary's data directory. */
async function assertAllSame (m: Multi, what: string): Promise<void> {
  await m.caughtUp()
  const p = await snapshotTree(m.primary.data)
  for (const [i, s] of m.secondaries.entries()) {
    const [d, mnt] = await Promise.all([snapshotTree(s.data), snapshotTree(s.mount)])
    assertNoDiffs(diffSnapshots(p, d, { a: 'primary data', b: `secondary ${i} data`, mtime: 'ns' }), `${what}: Secondary ${i} data vs the Primary's`)
    assertNoDiffs(diffSnapshots(p, mnt, { a: 'primary data', b: `secondary ${i} mount`, mtime: 'us' }), `${what}: Secondary ${i} mount vs the Primary's data`)
  }
}

/** waitFor with a quick poll and a generous deadline. */
async function until (fn: () => boolean | Promise<boolean>, what: string): Promise<void> {
  await waitFor(fn, { timeoutMs: 30_000, what, intervalMs: 100 })
}

async function bothConnected (m: Multi): Promise<PrimaryStatus> {
  await waitRlink(m, 0, (l) => l.state === 'connected', 'connected')
  return await waitRlink(m, 1, (l) => l.state === 'connected', 'connected')
}

t('the Primary releases a record only once every Secondary has applied it: a stalled one holds the SRL\'s tail until it catches up', isolated(90_000, async () => {
  try {
    await withMulti({ count: 2, via: [false, true], srlSize: SRL }, async (m) => {
      await bothConnected(m)
      await writeFiles(m, 'seed', 3, 4 * KiB)
      const st0 = await m.caughtUp()
      const n0 = newestSeq(st0)

      // B stops hearing from the Primary; A keeps up.
      m.proxies[1]!.stall()
      const names = await writeFiles(m, 'stalled', 8, 128 * KiB)
      await m.primary.quiesce()
      const n1 = newestSeq(await m.status())
      const st1 = await m.caughtUp([0])
      assert.ok(st1.rlinks[1].dataAckedSeq <= n0, `B applied none of the updates made while stalled: ${JSON.stringify(st1.rlinks[1])}`)
      assert.ok((await m.secondaries[1].status()).appliedSeq <= n0, 'B\'s own status agrees')
      assertAbsent(m.secondaries[1], names, 'B while stalled')
      for (const rel of names) assert.ok(fs.existsSync(path.join(m.secondaries[0].data, rel)), `A applied ${rel}`)

      // A checkpoint (the one at stop) releases what every RLINK applied, and keeps what B lacks.
      await m.primary.stop()
      const dump = await srlDump(m.primary.state)
      const seqs = dump.map((r) => r.seq)
      const ctx = `srl-dump seqs ${seqs.join(',')}; B data-acked ${st1.rlinks[1].dataAckedSeq} (seed up to ${n0}), A ${st1.rlinks[0].dataAckedSeq}, newest ${n1}`
      assert.ok(seqs.length > 0 && seqs[0] <= n0 + 1, `the records B has not applied are retained although A and the Primary applied them: ${ctx}`)
      assert.is(seqs[seqs.length - 1], n1, `up to the newest: ${ctx}`)
      assert.ok(seqs[0] > 1, `the checkpoint did release the records both Secondaries applied: ${ctx}`)
      const oldest = seqs[0]

      // After a restart (B still stalled) the SRL still holds them for B.
      await m.restartPrimary()
      const st2 = await m.status()
      assert.is(st2.srl.oldestSeq, oldest, `after the restart the SRL still starts where B needs it: ${JSON.stringify(st2.srl)}`)
      assert.is(st2.srl.newestSeq, n1, `and ends at the newest record: ${JSON.stringify(st2.srl)}`)

      // B catches up; then a checkpoint releases them. Writing past half of the 4 MiB SRL runs one
      // (ARCHITECTURE.md, "Checkpoints and release": on an append once the ring is more than 50 % full).
      m.proxies[1]!.unstall()
      await waitRlink(m, 1, (l) => l.dataAckedSeq >= n1, `data-acked up to ${n1} once unstalled`, 60_000)
      for (const rel of names) assert.ok(fs.existsSync(path.join(m.secondaries[1].data, rel)), `B applied ${rel} once unstalled`)
      await writeFiles(m, 'after', 20, 128 * KiB)
      await waitRlink(m, 1, (_l, st) => st.srl.oldestSeq === null || st.srl.oldestSeq > n1, `past a checkpoint that releases every record up to ${n1}`, 60_000)
      await assertAllSame(m, 'after B caught up')
    })
  } finally {
    await closeAllProxies()
  }
}))

t('pause --secondary pauses that link only: the other goes on replicating; resume brings it back', isolated(90_000, async () => {
  await withMulti({ count: 2, srlSize: SRL }, async (m) => {
    await bothConnected(m)
    await writeFiles(m, 'seed', 2, 1 * KiB)
    await m.caughtUp()
    const [a, b] = m.secondaries
    const b0 = await b.status()

    await pauseOrResume('pause', m.primary.state, m.targets[1])
    const st1 = await m.status()
    assert.is(st1.rlinks[1].state, 'paused', `pause returned: B's link is paused: ${JSON.stringify(st1.rlinks)}`)
    assert.is(st1.rlinks[0].state, 'connected', `A's link is not: ${JSON.stringify(st1.rlinks)}`)
    // pause closes the link (with a REFUSE): B sees its Primary go
    await until(async () => !(await b.status()).connected, 'B to see its Primary disconnect')

    const names = await writeFiles(m, 'while-paused', 5, 8 * KiB)
    await fsp.rename(path.join(m.primary.mount, 'seed', 'f0'), path.join(m.primary.mount, 'seed', 'renamed'))
    const st2 = await m.caughtUp([0])
    const n2 = newestSeq(st2)
    assert.ok(n2 > newestSeq(st1), 'the Primary logged the updates')
    for (const rel of names) assert.ok(fs.existsSync(path.join(a.mount, rel)), `A shows ${rel}`)
    const b2 = await b.status()
    assert.is(b2.receivedSeq, b0.receivedSeq, `nothing was sent to B: ${JSON.stringify(b2)}`)
    assert.is(b2.appliedSeq, b0.appliedSeq, 'B applied nothing')
    assertAbsent(b, names, 'B while paused')
    assert.ok(fs.existsSync(path.join(b.data, 'seed', 'f0')), 'B still has the old name')
    const l1 = st2.rlinks[1]
    assert.is(l1.state, 'paused', `still paused: ${JSON.stringify(l1)}`)
    assert.is(l1.sentSeq, b0.receivedSeq, `sentSeq did not move: ${JSON.stringify(l1)}`)
    assert.is(l1.lagUpdates, n2 - l1.dataAckedSeq, `lagUpdates counts what B has not applied: ${JSON.stringify(l1)}`)
    assert.ok(st2.srl.oldestSeq !== null && st2.srl.oldestSeq <= l1.dataAckedSeq + 1, `the SRL keeps the updates for B: ${JSON.stringify(st2.srl)}`)

    await pauseOrResume('resume', m.primary.state, m.targets[1])
    await waitRlink(m, 1, (l) => l.state === 'connected', 'connected after resume')
    assert.is((await m.status()).rlinks[0].state, 'connected', 'A was never touched')
    await assertAllSame(m, 'after resume')
  })
}))

t('a paused link stays paused across a Primary restart: nothing is sent to it, and resume works', isolated(90_000, async () => {
  try {
    await withMulti({ count: 2, via: [false, true], srlSize: SRL }, async (m) => {
      const proxyB = m.proxies[1]!
      await bothConnected(m)
      await writeFiles(m, 'seed', 2, 1 * KiB)
      await m.caughtUp()
      const b0 = await m.secondaries[1].status()

      await pauseOrResume('pause', m.primary.state, m.targets[1])
      await until(() => proxyB.open === 0, 'the paused link\'s connection to close')
      await m.primary.stop()
      const accepted = proxyB.accepted
      await m.restartPrimary()
      const st1 = await m.status()
      assert.is(st1.rlinks[1].state, 'paused', `after the restart B's link is still paused: ${JSON.stringify(st1.rlinks)}`)
      await waitRlink(m, 0, (l) => l.state === 'connected', 'connected after the restart')

      const names = await writeFiles(m, 'after-restart', 4, 8 * KiB)
      const st2 = await m.caughtUp([0])
      // "Does not reconnect": nothing happens during 3 s, longer than the longest reconnect backoff
      // (RLINK_RECONNECT_MAX_MS, 2 s). A fixed wait, because the assertion is that nothing happens.
      await new Promise((resolve) => setTimeout(resolve, 3000))
      assert.is(proxyB.accepted, accepted, `the restarted Primary never connected to the paused Secondary (proxy events: ${proxyB.events.join(' | ')})`)
      const b1 = await m.secondaries[1].status()
      assert.is(b1.receivedSeq, b0.receivedSeq, `nothing was sent to B: ${JSON.stringify(b1)}`)
      assertAbsent(m.secondaries[1], names, 'B while paused across the restart')
      const st3 = await m.status()
      assert.is(st3.rlinks[1].state, 'paused', `still paused: ${JSON.stringify(st3.rlinks[1])}`)
      assert.ok(st3.srl.oldestSeq !== null && st3.srl.oldestSeq <= b0.appliedSeq + 1, `the SRL keeps the updates for B: ${JSON.stringify(st3.srl)}, B applied ${b0.appliedSeq}`)
      assert.ok(newestSeq(st2) > b0.receivedSeq, 'there is something to send')

      await pauseOrResume('resume', m.primary.state, m.targets[1])
      await waitRlink(m, 1, (l) => l.state === 'connected', 'connected after resume')
      assert.ok(proxyB.accepted > accepted, 'resume connected through the proxy')
      await assertAllSame(m, 'after resume')
    })
  } finally {
    await closeAllProxies()
  }
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
