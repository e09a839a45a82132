/**
 * What happens when the Primary's SRL is full (issue 17, "Promises with no test", item 1).
 *
 * README.md, "Replication": "The SRL keeps every update until every Secondary has applied it. If
 * it fills up while a connected Secondary is behind, writers wait for it (flow control); if no
 * Secondary can make progress (disconnected or paused), writes fail with `ENOSPC` (VVR's
 * `srlprot=fail`)." These tests run with `--srlprot fail`, VVR's meaning of those words;
 * the default, autodcm, and the other modes are test/srlprot.test.ts's." docs/ARCHITECTURE.md, "When the SRL is full" (and "With `--retain` a full SRL
 * fails at once"), "Checkpoints and release" ("With `--retain` nothing is released ... a full ring
 * fails writes with `ENOSPC`"), "Pause and resume" ("the SRL keeps the records for it (so a long
 * pause ends in `SRL_FULL`)").
 *
 * The Primary's SRL is the smallest accepted (SRL_BYTES_MIN, 4 MiB); writes are `dd` runs through
 * the mount (test/helpers/multi.ts), one 128 KiB write(2) per block, so each is one SRL record
 * and dd's report says exactly which write failed. A refused write must be neither logged (the
 * SRL's newest sequence number and record count do not move) nor applied (the data directory and
 * the mount show the file as it was), and so it never reaches the Secondary either.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  startPrimary, assertCleanSlate, cleanupAll, isolated, timed, waitFor,
  type Primary, type PrimaryStatus, type Status
} from './helpers'
import { closeAllProxies } from './helpers/proxy'
import { withMulti, waitRlink, pauseOrResume, ddWrite, sha256Of, newestSeq, type Multi, type DdResult } from './helpers/multi'
import { RECORD_BYTES_MAX, RECORD_DATA_BYTES_MAX, SRL_BYTES_MIN } from '../src/limits'

const t = suite('srl-full')

t.after(async () => {
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`srl-full.test: cleanup had to force: ${forced.join('; ')}`)
})

/** The Primary's --srl-size: the smallest accepted, so it fills fast. */
const SRL = `${SRL_BYTES_MIN / (1024 * 1024)}M`
const BLOCK = 128 * 1024
/**
 * "Full": the next 128 KiB record does not fit. It can leave up to one record unused at the end
 * of the ring (a WRAP) plus less than one record of free space: within two maximal records.
 */
const FULL_MARGIN = 2 * (RECORD_BYTES_MAX - RECORD_DATA_BYTES_MAX + BLOCK)
/** A refused write under --retain is answered at once; this only catches one that waits (a 2-core machine under load). */
const AT_ONCE_MS = 5000

function isFull (s: Status | PrimaryStatus): boolean {
  return s.srl.bytes + FULL_MARGIN >= s.srl.capacityBytes
}

function sha256 (b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex')
}

/** `bytes` random bytes written to NAME under `dir` (not a mount); returns the path and the bytes. */
async function randomSource (dir: string, name: string, bytes: number): Promise<{ file: string, buf: Buffer }> {
  const buf = crypto.randomBytes(bytes)
  const file = path.join(dir, name)
  await fsp.writeFile(file, buf)
  return { file, buf }
}

function ddText (d: DdResult): string {
  return `${d.r.cmdline}: exit ${String(d.r.code)}, ${d.ms} ms\n${d.r.stderr}`
}

/** dd failed on a full SRL: with ENOSPC, after writing `min`..`max` bytes, in whole blocks. */
function assertEnospc (d: DdResult, what: string, min: number, max: number): void {
  assert.not.ok(d.r.timedOut, `${what}: dd timed out instead of failing: ${ddText(d)}`)
  assert.not.ok(d.ok, `${what}: dd must fail: ${ddText(d)}`)
  assert.ok(d.enospc, `${what}: the write fails with ENOSPC ("No space left on device"): ${ddText(d)}`)
  assert.ok(d.bytes >= min && d.bytes <= max && d.bytes % BLOCK === 0, `${what}: dd wrote ${d.bytes} bytes, expected whole ${BLOCK}-byte blocks between ${min} and ${max}: ${ddText(d)}`)
}

/**
 * The SRL is full; one more write (a block at offset 0 of `rel`, which must hold `expect`) fails
 * with ENOSPC and is neither logged nor applied. Returns the status after it.
 */
async function assertRefusedWrite (p: Primary, status: () => Promise<PrimaryStatus | Status>, rel: string, expect: Buffer, what: string): Promise<void> {
  await p.quiesce()
  const before = await status()
  assert.ok(isFull(before), `${what}: the SRL is full (${before.srl.bytes} of ${before.srl.capacityBytes} bytes): ${JSON.stringify(before.srl)}`)
  const dataFile = path.join(p.data, rel)
  assert.is(fs.statSync(dataFile).size, expect.length, `${what}: the Primary's data directory holds exactly what dd reports written (the write that failed left nothing)`)
  assert.is(await sha256Of(dataFile), sha256(expect), `${what}: the Primary's data directory holds exactly the bytes dd reports written`)

  const pattern = await randomSource(p.root, 'refused-block', BLOCK)
  const d = await ddWrite(pattern.file, path.join(p.mount, rel), { count: 1, seek: 0, timeoutMs: 60_000 })
  assertEnospc(d, `${what}: one more write`, 0, 0)
  await p.quiesce()
  const after = await status()
  const ctx = `before ${JSON.stringify(before.srl)}, after ${JSON.stringify(after.srl)}`
  assert.is(after.srl.newestSeq, before.srl.newestSeq, `${what}: the refused write was not logged (newestSeq): ${ctx}`)
  assert.is(after.srl.records, before.srl.records, `${what}: the refused write was not logged (records): ${ctx}`)
  assert.is(after.srl.appliedSeq, before.srl.appliedSeq, `${what}: nothing was applied: ${ctx}`)
  assert.is(fs.statSync(dataFile).size, expect.length, `${what}: the refused write did not change the file's size in the data directory`)
  assert.is(await sha256Of(dataFile), sha256(expect), `${what}: the refused write is not in the Primary's data directory`)
  assert.is(await sha256Of(path.join(p.mount, rel)), sha256(expect), `${what}: the refused write does not show through the mount`)
}

/** The file `rel` has the same bytes on the Primary's data directory, the Secondary's data directory and its mount. */
async function assertReplicated (m: Multi, rel: string, expect: Buffer, what: string): Promise<void> {
  const want = sha256(expect)
  const s = m.secondaries[0]
  assert.is(await sha256Of(path.join(m.primary.data, rel)), want, `${what}: ${rel} in the Primary's data directory`)
  assert.is(await sha256Of(path.join(s.data, rel)), want, `${what}: ${rel} in the Secondary's data directory`)
  assert.is(await sha256Of(path.join(s.mount, rel)), want, `${what}: ${rel} through the Secondary's mount`)
}

/** Writes a small file and waits until the Secondary has applied it (so its link is up and acking). */
async function seed (m: Multi): Promise<PrimaryStatus> {
  await waitRlink(m, 0, (l) => l.state === 'connected', 'connected')
  await fsp.writeFile(path.join(m.primary.mount, 'seed.txt'), 'before the SRL fills\n')
  const st = await m.caughtUp()
  assert.is(st.srl.capacityBytes, SRL_BYTES_MIN, `--srl-size ${SRL} gives a ring of ${SRL_BYTES_MIN} bytes: ${JSON.stringify(st.srl)}`)
  return st
}

t('a connected Secondary that is behind: writers wait (no error) while the SRL is full, and complete as it catches up', isolated(90_000, async () => {
  try {
    await withMulti({ count: 1, via: [true], srlSize: SRL, primaryExtraArgs: ['--srlprot', 'fail'] }, async (m) => {
      await seed(m)
      // 400 ms each way: the Secondary acks every record at least 800 ms after it was sent, so
      // the writer fills the 4 MiB SRL long before the first acks free any of it.
      m.proxies[0]!.delay(400)
      const total = 6 * SRL_BYTES_MIN
      const src = await randomSource(m.primary.root, 'src', total)
      let done = false
      const writer = ddWrite(src.file, path.join(m.primary.mount, 'big'), { timeoutMs: 120_000 }).finally(() => { done = true })
      writer.catch(() => undefined) // awaited below; this only keeps an early failure of the wait from leaving it unhandled
      // The SRL is seen full, with the link connected and behind, while the writer is still
      // writing (before and after the status was taken).
      const seen = await waitFor(async () => {
        if (done) return { st: undefined }
        const st = await m.status()
        if (done) return { st: undefined }
        return isFull(st) && st.rlinks[0].state === 'connected' && st.rlinks[0].lagUpdates > 0 ? { st } : undefined
      }, { timeoutMs: 60_000, what: 'the SRL to be full while the writer writes', intervalMs: 50 })
      const d = await writer
      assert.ok(d.ok, `the writer waited instead of failing: every write succeeded: ${ddText(d)}\nstatus now ${JSON.stringify(await m.status())}${await m.logs()}`)
      assert.is(d.bytes, total, 'dd wrote everything')
      assert.ok(seen.st !== undefined, `the SRL was seen full while the writer was still writing (it finished first: is anything retained for the Secondary?): ${ddText(d)}\nstatus now ${JSON.stringify(await m.status())}`)
      m.proxies[0]!.delay(0)
      await m.caughtUp()
      await assertReplicated(m, 'big', src.buf, 'after flow control')
    })
  } finally {
    await closeAllProxies()
  }
}))

t('no RLINK can make progress (Secondary stopped) and the SRL is full: ENOSPC; the refused write is neither logged nor applied', isolated(90_000, async () => {
  await withMulti({ count: 1, srlSize: SRL, primaryExtraArgs: ['--srlprot', 'fail'] }, async (m) => {
    const st0 = await seed(m)
    await m.secondaries[0].stop()
    await waitRlink(m, 0, (l) => l.state === 'disconnected' || l.state === 'connecting', 'down after the Secondary stopped')
    const src = await randomSource(m.primary.root, 'src', 2 * SRL_BYTES_MIN)
    const fill = await ddWrite(src.file, path.join(m.primary.mount, 'big'), { timeoutMs: 60_000 })
    assertEnospc(fill, 'filling the SRL with the Secondary down', BLOCK, SRL_BYTES_MIN)
    const st1 = await m.status()
    const l1 = st1.rlinks[0]
    assert.is.not(l1.state, 'connected', `the link is still down: ${JSON.stringify(l1)}`)
    assert.is(l1.dataAckedSeq, newestSeq(st0), `the Secondary applied nothing more: ${JSON.stringify(l1)}`)
    assert.ok(st1.srl.oldestSeq !== null && st1.srl.oldestSeq <= l1.dataAckedSeq + 1, `the SRL keeps every record the Secondary has not applied: ${JSON.stringify(st1.srl)}, ${JSON.stringify(l1)}`)
    await assertRefusedWrite(m.primary, m.status, 'big', src.buf.subarray(0, fill.bytes), 'Secondary stopped')

    // Once the Secondary is back and has applied what the SRL kept, writes succeed again; it
    // holds exactly the Primary's file, without the refused writes.
    await m.restartSecondary(0)
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected again')
    await m.caughtUp()
    await assertReplicated(m, 'big', src.buf.subarray(0, fill.bytes), 'after the Secondary came back')
    const block = await randomSource(m.primary.root, 'accepted-block', BLOCK)
    const again = await ddWrite(block.file, path.join(m.primary.mount, 'big'), { count: 1, seek: 0, timeoutMs: 60_000 })
    assert.ok(again.ok, `a write succeeds once the Secondary caught up: ${ddText(again)}${await m.logs()}`)
    await m.caughtUp()
    await assertReplicated(m, 'big', Buffer.concat([block.buf, src.buf.subarray(BLOCK, fill.bytes)]), 'after a write once it caught up')
  })
}))

t('--retain, no Secondary: a full SRL fails writes with ENOSPC at once; nothing is released, the refused write is neither logged nor applied', isolated(60_000, async () => {
  const p = await startPrimary({ retain: true, srlSize: SRL })
  try {
    await fsp.writeFile(path.join(p.mount, 'seed.txt'), 'first record\n')
    const src = await randomSource(p.root, 'src', 2 * SRL_BYTES_MIN)
    const fill = await ddWrite(src.file, path.join(p.mount, 'big'), { timeoutMs: 60_000 })
    assertEnospc(fill, 'filling the SRL under --retain', BLOCK, SRL_BYTES_MIN)
    const st = await p.status()
    assert.is(st.srl.oldestSeq, 1, `--retain releases nothing: the SRL still starts at record 1: ${JSON.stringify(st.srl)}`)
    await assertRefusedWrite(p, p.status, 'big', src.buf.subarray(0, fill.bytes), '--retain')
    // "at once": no wait for anything (there is nothing that could free space)
    const pattern = await randomSource(p.root, 'pattern', BLOCK)
    const d = await ddWrite(pattern.file, path.join(p.mount, 'big'), { count: 1, seek: 3, timeoutMs: 30_000 })
    assertEnospc(d, '--retain, a write on a full SRL', 0, 0)
    assert.ok(d.ms < AT_ONCE_MS, `the refused write returned at once (took ${d.ms} ms; the bound only catches a wait)`)
    assert.is((await p.status()).srl.oldestSeq, 1, 'still nothing released')
  } finally {
    await p.stop()
  }
}))

t('a long pause ends in a full SRL (ENOSPC, nothing sent); resume: the Secondary catches up and writes succeed again', isolated(90_000, async () => {
  await withMulti({ count: 1, srlSize: SRL, primaryExtraArgs: ['--srlprot', 'fail'] }, async (m) => {
    const st0 = await seed(m)
    const s0 = await m.secondaries[0].status()
    await pauseOrResume('pause', m.primary.state)
    await waitRlink(m, 0, (l) => l.state === 'paused', 'paused')
    const src = await randomSource(m.primary.root, 'src', 2 * SRL_BYTES_MIN)
    const fill = await ddWrite(src.file, path.join(m.primary.mount, 'big'), { timeoutMs: 60_000 })
    assertEnospc(fill, 'filling the SRL while paused', BLOCK, SRL_BYTES_MIN)
    const st1 = await m.status()
    assert.is(st1.rlinks[0].state, 'paused', `still paused: ${JSON.stringify(st1.rlinks[0])}`)
    assert.ok(st1.srl.oldestSeq !== null && st1.srl.oldestSeq <= newestSeq(st0) + 1, `the SRL kept every update made while paused: ${JSON.stringify(st1.srl)}`)
    await assertRefusedWrite(m.primary, m.status, 'big', src.buf.subarray(0, fill.bytes), 'paused')
    const s1 = await m.secondaries[0].status()
    assert.is(s1.receivedSeq, s0.receivedSeq, `nothing was sent while paused: ${JSON.stringify(s1)}`)
    assert.not.ok(fs.existsSync(path.join(m.secondaries[0].data, 'big')), 'the Secondary has none of it')

    await pauseOrResume('resume', m.primary.state)
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected after resume')
    await m.caughtUp()
    await assertReplicated(m, 'big', src.buf.subarray(0, fill.bytes), 'after resume')
    // writes succeed again, more of them than the SRL holds (space is released as the Secondary applies)
    const src2 = await randomSource(m.primary.root, 'src2', 2 * SRL_BYTES_MIN)
    const after = await ddWrite(src2.file, path.join(m.primary.mount, 'after'), { timeoutMs: 60_000 })
    assert.ok(after.ok && after.bytes === src2.buf.length, `after resume every write succeeds: ${ddText(after)}${await m.logs()}`)
    await m.caughtUp()
    await assertReplicated(m, 'after', src2.buf, 'written after resume')
  })
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
