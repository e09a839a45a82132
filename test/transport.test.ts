/**
 * The RLINK's network efficiency (issue 15, "Network efficiency"):
 * - `--compress zstd`: negotiated in the handshake (wire version 8); updates and full
 *   synchronization data travel compressed where it pays, random data as it is; the trees end
 *   identical and the status shows the ratio.
 * - `--bandwidth-limit RATE` per RLINK (VVR's bandwidth_limit), honoured within 10% over a 10 s
 *   window, and changed at run time with `replicafs set --state DIR bandwidth-limit RATE`.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import {
  assertOneLineError, startPair, startPrimary, startSecondary, assertCleanSlate, cleanupAll, isolated, timed, waitFor, cli, tmpdirs, statusFast,
  type PrimaryStatus, type SecondaryStatus
} from './helpers'
import { diffTrees } from './helpers/compare'

const t = suite('transport')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`transport.test: cleanup had to force: ${forced.join('; ')}`)
})

const MiB = 1024 * 1024

interface Transport { tls: boolean, compress: string, bytesOut: number, bytesRaw: number }
type Rlink = PrimaryStatus['rlinks'][number] & { transport?: Transport | null, bandwidthLimit?: number | null }

async function rlink (state: string): Promise<Rlink> {
  return (await statusFast<PrimaryStatus>(state)).rlinks[0] as Rlink
}

/** Text that compresses well (log lines), `bytes` long. */
function logText (bytes: number, seed: number): Buffer {
  const lines: string[] = []
  let n = 0
  for (let i = 0; n < bytes; i++) {
    const l = `2026-12-06T04:${String(i % 60).padStart(2, '0')}:00Z host-${seed} replicafs[${1000 + (i % 97)}]: request ${i} served in ${(i * 7) % 1000} us\n`
    lines.push(l)
    n += l.length
  }
  return Buffer.from(lines.join('')).subarray(0, bytes)
}

async function caughtUp (state: string, timeoutMs = 60_000): Promise<void> {
  await waitFor(async () => {
    const p = await statusFast<PrimaryStatus>(state)
    const newest = p.srl.newestSeq ?? p.srl.appliedSeq
    return p.rlinks.every((l) => (l as Rlink & { consistent?: boolean }).consistent === true && l.dataAckedSeq >= newest && l.dataAckedSeq >= p.srl.appliedSeq)
  }, { timeoutMs, what: 'every RLINK to data-ack everything the Primary logged', intervalMs: 100 })
}

t('--compress zstd: a full synchronization and then updates travel compressed where it pays; the trees end identical', isolated(180_000, async () => {
  // A Primary over a tree that exists already: the Secondary is synchronized in full (SYNC_DATA).
  const pdirs = await tmpdirs('pri')
  await fsp.mkdir(path.join(pdirs.data, 'logs'))
  for (let i = 0; i < 4; i++) await fsp.writeFile(path.join(pdirs.data, 'logs', `old-${i}.log`), logText(2 * MiB, i))
  await fsp.writeFile(path.join(pdirs.data, 'random.bin'), crypto.randomBytes(2 * MiB))
  const s = await startSecondary()
  const p = await startPrimary({ dirs: pdirs, srlSize: '64M', extraArgs: ['--secondary', s.address, '--secret-file', s.secretFile, '--compress', 'zstd'] })
  await caughtUp(p.state)
  const afterSync = await rlink(p.state)
  assert.equal(afterSync.transport?.compress, 'zstd', `the RLINK agreed on zstd: ${JSON.stringify(afterSync.transport)}`)
  const syncRatio = afterSync.transport!.bytesRaw / afterSync.transport!.bytesOut
  assert.ok(syncRatio > 2, `the synchronization went compressed: ${afterSync.transport!.bytesRaw} bytes of frames in ${afterSync.transport!.bytesOut} on the wire (${syncRatio.toFixed(2)}:1)`)
  // Then updates: more log text, and random bytes (which go as they are).
  for (let i = 0; i < 4; i++) await fsp.writeFile(path.join(p.mount, 'logs', `new-${i}.log`), logText(MiB, 10 + i))
  await fsp.writeFile(path.join(p.mount, 'random2.bin'), crypto.randomBytes(MiB))
  await caughtUp(p.state)
  const after = await rlink(p.state)
  const raw = after.transport!.bytesRaw - afterSync.transport!.bytesRaw
  const out = after.transport!.bytesOut - afterSync.transport!.bytesOut
  assert.ok(raw > 5 * MiB && out < raw * 0.6, `the updates went compressed: ${raw} bytes of frames in ${out} on the wire`)
  assert.ok(out > MiB, `random data is not made smaller (${out} bytes on the wire for at least 1 MiB of random data)`)
  const ss = await statusFast<SecondaryStatus & { transport?: { compress: string } | null }>(s.state)
  assert.equal(ss.transport?.compress, 'zstd', 'the Secondary\'s status says zstd')
  assert.equal(await diffTrees(s.mount, p.mount), [], 'the trees are identical')
  const text = await cli(['status', '--state', p.state])
  assert.match(text.stdout, /zstd \(\d+\.\d\d:1\)/, `status shows the ratio: ${text.stdout}`)
  await p.stop()
  await s.stop()
}))

t('--bandwidth-limit: within 10% over a 10 s window; replicafs set changes it on the running Primary, and none lifts it', isolated(240_000, async () => {
  const pair = await startPair({ srlSize: '256M', primaryExtraArgs: ['--bandwidth-limit', '2M'] })
  const { primary: p } = pair
  // 48 MiB logged at once: the RLINK always has more to send than the limit lets through.
  for (let i = 0; i < 12; i++) await fsp.writeFile(path.join(p.mount, `f${i}`), crypto.randomBytes(4 * MiB))
  const l0 = await rlink(p.state)
  assert.is(l0.bandwidthLimit, 2 * MiB, 'status shows the limit')
  const window = async (seconds: number): Promise<number> => {
    const a = await rlink(p.state)
    const ta = Date.now()
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000)) // the measurement window itself, not a wait for a condition
    const b = await rlink(p.state)
    return (b.transport!.bytesOut - a.transport!.bytesOut) / ((Date.now() - ta) / 1000)
  }
  await waitFor(async () => ((await rlink(p.state)).transport?.bytesOut ?? 0) > 2 * MiB, { timeoutMs: 20_000, what: 'the first 2 MiB to go', intervalMs: 100 })
  const r1 = await window(10)
  assert.ok(r1 <= 2 * MiB * 1.1, `at most the limit + 10% over 10 s: ${(r1 / MiB).toFixed(2)} MiB/s against 2 MiB/s`)
  assert.ok(r1 >= 2 * MiB * 0.5, `and the link is not starved: ${(r1 / MiB).toFixed(2)} MiB/s`)
  const set = await cli(['set', '--state', p.state, 'bandwidth-limit', '1M'])
  assert.is(set.code, 0, set.stderr)
  assert.match(set.stdout, /bandwidth-limit 1\.0 MiB\/s on 127\.0\.0\.1:\d+/)
  assert.is((await rlink(p.state)).bandwidthLimit, MiB, 'status shows the new limit')
  const r2 = await window(10)
  assert.ok(r2 <= MiB * 1.1, `after set 1M: at most 1 MiB/s + 10% over 10 s: ${(r2 / MiB).toFixed(2)} MiB/s`)
  assert.ok(r2 >= MiB * 0.5, `and not starved: ${(r2 / MiB).toFixed(2)} MiB/s`)
  assert.is((await cli(['set', '--state', p.state, 'bandwidth-limit', 'none'])).code, 0)
  assert.is((await rlink(p.state)).bandwidthLimit, null, 'none lifts the limit')
  await pair.caughtUp(120_000)
  assert.equal(await diffTrees(pair.secondary.mount, p.mount), [], 'the trees are identical')
  // Mistakes: one line each.
  assertOneLineError(await cli(['set', '--state', p.state, 'bandwidth-limit', 'fast']), ['bandwidth-limit', 'fast'])
  assertOneLineError(await cli(['set', '--state', p.state, 'latency', '3']), ['unknown attribute', 'latency'])
  assertOneLineError(await cli(['set', '--state', p.state, 'bandwidth-limit', '1M', '--secondary', '127.0.0.1:9']), ['127.0.0.1:9'])
  assertOneLineError(await cli(['set', '--state', pair.secondary.state, 'bandwidth-limit', '1M']), [])
  assert.ok(fs.existsSync(path.join(p.state, 'control.sock')), 'the Primary still runs')
  await pair.stop()
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, async () => {
  await assertCleanSlate()
}))

t.run()
