/**
 * The synchronous modes (`--synchronous off|override|fail`), each with the Secondary up and down.
 *
 * The Primary reaches the Secondary through a proxy (test/helpers/replica-tree.ts) that delays
 * every byte from the Secondary back to the Primary by DELAY_MS, so "the write waited for the
 * network ack" is observable: a synchronous write cannot return before the delayed ack arrives
 * (latency >= DELAY_MS, and status shows networkAckedSeq >= the Primary's newest record at once),
 * an asynchronous one does not wait for it. The contract is README.md ("Commands", "`status
 * --json` fields").
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPair, startSecondary, assertCleanSlate, cleanupAll, isolated, timed, waitFor, withDeadline, exec,
  type Pair, type Secondary, type PrimaryStatus, type Dirs
} from './helpers'
import { snapshotTree, diffSnapshots, assertNoDiffs, startDelayProxy, closeProxies } from './helpers/replica-tree'

const t = suite('sync-modes')
const DELAY_MS = 700

t.after(async () => {
  await closeProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`sync-modes.test: cleanup had to force: ${forced.join('; ')}`)
})

type Mode = 'off' | 'override' | 'fail'

function lastSeq (s: PrimaryStatus): number {
  return s.srl.newestSeq ?? s.srl.appliedSeq
}

function dirsOf (d: Dirs): Dirs {
  return { root: d.root, data: d.data, mount: d.mount, state: d.state }
}

async function logs (pair: Pair, sec: Secondary = pair.secondary): Promise<string> {
  return `\n--- primary daemon.log ---\n${await pair.primary.log()}\n--- secondary daemon.log ---\n${await sec.log()}`
}

/** A pair in `mode`, the Primary connected through a proxy delaying the Secondary's replies. */
async function delayedPair (mode: Mode): Promise<Pair> {
  const pair = await startPair({ synchronous: mode, via: async (addr) => (await startDelayProxy(addr, DELAY_MS)).address })
  await waitForState(pair, (s) => s === 'connected', 'connected')
  const st = await pair.primaryStatus()
  assert.is(st.synchronous, mode, 'status reports the --synchronous mode')
  return pair
}

async function waitForState (pair: Pair, ok: (s: string) => boolean, what: string, sec?: Secondary): Promise<PrimaryStatus> {
  return await waitFor(async () => {
    const st = await pair.primaryStatus()
    return ok(st.rlinks[0].state) ? st : undefined
  }, { timeoutMs: 30_000, what: `the rlink to be ${what}`, intervalMs: 100 })
    .catch(async (err: Error) => { throw new Error(err.message + await logs(pair, sec)) })
}

/** One write(2) of `data` at `pos`; returns how long the call took, in ms. */
async function timedWrite (fh: fsp.FileHandle, data: string, pos: number, deadlineMs = 20_000): Promise<number> {
  const buf = Buffer.from(data)
  const t0 = process.hrtime.bigint()
  const { bytesWritten } = await withDeadline(fh.write(buf, 0, buf.length, pos), deadlineMs, `a ${buf.length}-byte write at ${pos} to return`)
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  assert.is(bytesWritten, buf.length)
  return ms
}

/**
 * Synchronous writes: each write(2) (and a create) returns only once the Secondary has logged it:
 * status at once shows networkAckedSeq >= the newest record, and the call took >= DELAY_MS.
 */
async function assertWritesWaitForAck (pair: Pair, file: string, label: string): Promise<void> {
  const fh = await fsp.open(file, 'r+')
  try {
    for (let i = 0; i < 2; i++) {
      const ms = await timedWrite(fh, `${label} write ${i}\n`, i * 64)
      const st = await pair.primaryStatus()
      const l = st.rlinks[0]
      assert.ok(l.networkAckedSeq >= lastSeq(st), `${label}: when write ${i} returned, the Secondary had logged it (networkAckedSeq ${l.networkAckedSeq} >= newest ${lastSeq(st)}): ${JSON.stringify(st)}`)
      assert.ok(ms >= DELAY_MS - 20, `${label}: write ${i} took ${ms.toFixed(0)} ms, less than the ${DELAY_MS} ms the ack takes to come back, so it did not wait for it`)
    }
  } finally {
    await fh.close()
  }
  const created = path.join(path.dirname(file), `created-${label.replace(/\W+/g, '-')}`)
  await withDeadline(fsp.writeFile(created, label), 20_000, 'a create + write to return')
  const st = await pair.primaryStatus()
  assert.ok(st.rlinks[0].networkAckedSeq >= lastSeq(st), `${label}: when a create returned, the Secondary had logged it: ${JSON.stringify(st.rlinks[0])}, newest ${lastSeq(st)}`)
}

/**
 * With the Secondary known to be down, a write that does not wait for it returns at once; this
 * bound only catches one stuck behind the dead link (RLINK_DEAD_AFTER_MS is 10 s).
 */
const DOWN_WRITE_MS = 5000

/** Restarts a stopped or killed Secondary on its dirs, address and secret file. */
async function restartSecondary (sec: Secondary): Promise<Secondary> {
  const s2 = await startSecondary({ dirs: dirsOf(sec), listen: sec.address, secretFile: sec.secretFile })
  assert.is(s2.address, sec.address, 'the Secondary is back on the same address')
  return s2
}

async function assertSameData (pair: Pair, sec: Secondary, what: string): Promise<void> {
  await pair.caughtUp(60_000).catch(async (err: Error) => { throw new Error(err.message + await logs(pair, sec)) })
  const [a, b, c] = await Promise.all([snapshotTree(pair.primary.data), snapshotTree(sec.data), snapshotTree(sec.mount)])
  assertNoDiffs(diffSnapshots(a, b, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), `${what}: Secondary data vs Primary data`)
  assertNoDiffs(diffSnapshots(a, c, { a: 'primary data', b: 'secondary mount', mtime: 'us' }), `${what}: Secondary mount vs Primary data`)
}

async function stopAll (pair: Pair, sec: Secondary): Promise<void> {
  await pair.primary.stop()
  await sec.stop()
  await closeProxies()
}

t('off: writes do not wait for the Secondary; with it stopped they succeed, and replicate once it is back', isolated(90_000, async () => {
  try {
    const pair = await delayedPair('off')
    const pm = (rel: string): string => path.join(pair.primary.mount, rel)
    await fsp.writeFile(pm('data.txt'), 'x'.repeat(256))
    const fh = await fsp.open(pm('data.txt'), 'r+')
    const times: number[] = []
    try {
      for (let i = 0; i < 3; i++) times.push(await timedWrite(fh, `async ${i}\n`, i * 16))
    } finally {
      await fh.close()
    }
    assert.ok(Math.max(...times) < DELAY_MS, `every asynchronous write returns before the Secondary's ack (${DELAY_MS} ms away): took ${times.map((x) => x.toFixed(0)).join(', ')} ms`)
    await pair.caughtUp()

    await pair.secondary.stop()
    await waitForState(pair, (s) => s !== 'connected', 'not connected after the Secondary stopped')
    const before = lastSeq(await pair.primaryStatus())
    await withDeadline(fsp.writeFile(pm('while-down.txt'), 'written with the Secondary stopped'), DOWN_WRITE_MS, 'a write with the Secondary down')
    await withDeadline(fsp.appendFile(pm('data.txt'), 'appended while down\n'), DOWN_WRITE_MS, 'an append with the Secondary down')
    const st = await pair.primaryStatus()
    assert.ok(lastSeq(st) > before, 'the Primary logged them')
    assert.is.not(st.rlinks[0].state, 'connected')
    assert.ok(st.rlinks[0].lagUpdates > 0, `lag counts them: ${JSON.stringify(st.rlinks[0])}`)

    const sec2 = await restartSecondary(pair.secondary)
    await waitForState(pair, (s) => s === 'connected', 'connected again', sec2)
    await assertSameData(pair, sec2, 'off, after the Secondary came back')
    assert.is((await fsp.readFile(path.join(sec2.mount, 'while-down.txt'))).toString(), 'written with the Secondary stopped')
    await stopAll(pair, sec2)
  } finally {
    await closeProxies()
  }
}))

t('override: writes wait for the network ack; with the Secondary down they succeed (asynchronous, rlink disconnected); it catches up', isolated(120_000, async () => {
  try {
    const pair = await delayedPair('override')
    const pm = (rel: string): string => path.join(pair.primary.mount, rel)
    await fsp.writeFile(pm('data.txt'), 'x'.repeat(256))
    await assertWritesWaitForAck(pair, pm('data.txt'), 'override, Secondary up')

    await pair.secondary.kill9()
    const down = await waitForState(pair, (s) => s === 'disconnected', 'disconnected after the Secondary was killed')
    assert.ok(down.rlinks[0].lastError !== null, `lastError says why: ${JSON.stringify(down.rlinks[0])}`)
    const before = lastSeq(down)
    await withDeadline(fsp.writeFile(pm('while-down.txt'), 'written with the Secondary down'), DOWN_WRITE_MS, 'a create + write with the Secondary down (override falls back to asynchronous)')
    const fh = await fsp.open(pm('data.txt'), 'r+')
    try {
      await timedWrite(fh, 'while down\n', 200, DOWN_WRITE_MS)
    } finally {
      await fh.close()
    }
    const st = await pair.primaryStatus()
    assert.ok(lastSeq(st) > before, 'the Primary logged them')
    assert.is.not(st.rlinks[0].state, 'connected', 'the rlink is still down')
    assert.ok(st.rlinks[0].networkAckedSeq < lastSeq(st), 'those writes were not network-acked')
    const sec2 = await restartSecondary(pair.secondary)
    await waitForState(pair, (s) => s === 'connected', 'connected again', sec2)
    await assertSameData(pair, sec2, 'override, after the Secondary came back')
    assert.is((await fsp.readFile(path.join(sec2.mount, 'while-down.txt'))).toString(), 'written with the Secondary down')
    // and synchronous again
    await assertWritesWaitForAck(pair, pm('data.txt'), 'override, Secondary back')
    await stopAll(pair, sec2)
  } finally {
    await closeProxies()
  }
}))

t('fail: writes wait for the network ack; with the Secondary stopped they fail with EIO; once it is back they succeed', isolated(120_000, async () => {
  try {
    const pair = await delayedPair('fail')
    const pm = (rel: string): string => path.join(pair.primary.mount, rel)
    await fsp.writeFile(pm('data.txt'), 'x'.repeat(256))
    await assertWritesWaitForAck(pair, pm('data.txt'), 'fail, Secondary up')

    const fh = await fsp.open(pm('data.txt'), 'r+')
    try {
      await pair.secondary.stop()
      const down = await waitForState(pair, (s) => s !== 'connected', 'not connected after the Secondary stopped')
      const dataBefore = await fsp.readFile(path.join(pair.primary.data, 'data.txt'))
      const w = await withDeadline(fh.write(Buffer.from('refused\n'), 0, 8, 0).then(() => 'succeeded', (e: { code?: string }) => e.code ?? String(e)), DOWN_WRITE_MS, 'a write with the Secondary down to return')
      assert.is(w, 'EIO', 'write(2) to an existing file fails with EIO')
      const c = await withDeadline(fsp.writeFile(pm('refused.txt'), 'refused').then(() => 'succeeded', (e: { code?: string }) => e.code ?? String(e)), DOWN_WRITE_MS, 'a create with the Secondary down to return')
      assert.is(c, 'EIO', 'creating and writing a file fails with EIO')
      const sh = await exec('sh', ['-c', 'echo x > shell.txt'], { cwd: pair.primary.mount, timeoutMs: 30_000 })
      assert.ok(sh.code !== 0 && sh.code !== null, `sh -c 'echo x > shell.txt' fails: exit ${String(sh.code)} ${sh.stderr}`)
      // ARCHITECTURE.md, "Synchronous modes": a refused update is neither logged nor applied.
      const after = await pair.primaryStatus()
      assert.is(lastSeq(after), lastSeq(down), 'nothing was logged in the Primary\'s SRL for the refused updates')
      assert.ok((await fsp.readFile(path.join(pair.primary.data, 'data.txt'))).equals(dataBefore), 'the refused write is not in the Primary\'s data directory')
      for (const name of ['refused.txt', 'shell.txt']) {
        assert.not.ok(fs.existsSync(path.join(pair.primary.data, name)), `${name} was not created in the Primary's data directory`)
        assert.not.ok(fs.existsSync(pm(name)), `${name} does not show through the mount`)
      }

      const sec2 = await restartSecondary(pair.secondary)
      await waitForState(pair, (s) => s === 'connected', 'connected again', sec2)
      const ms = await timedWrite(fh, 'accepted\n', 0)
      assert.ok(ms >= DELAY_MS - 20, `the write after reconnecting waited for the ack (${ms.toFixed(0)} ms)`)
      await fh.close()
      await withDeadline(fsp.writeFile(pm('after.txt'), 'after the Secondary came back'), 20_000, 'a create after the Secondary came back')
      // whatever the refused writes left on the Primary, the Secondary holds the same
      await assertSameData(pair, sec2, 'fail, after the Secondary came back')
      assert.is((await fsp.readFile(path.join(sec2.mount, 'after.txt'))).toString(), 'after the Secondary came back')
      assert.is((await fsp.readFile(path.join(sec2.mount, 'data.txt'))).subarray(0, 9).toString(), 'accepted\n')
      await stopAll(pair, sec2)
    } finally {
      await fh.close().catch(() => undefined)
    }
  } finally {
    await closeProxies()
  }
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
