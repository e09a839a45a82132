/**
 * `replicafs stats` (VVR's vrstat): the rates between two looks (a unit test of statsLine), and a
 * pair on loopback: while a writer writes, the Primary's lines show updates logged and sent per
 * second and each RLINK's lag; the Secondary's, received and applied per second; bad flags are
 * one line. `--metrics` on both: Prometheus text at /metrics with the replicafs_* figures of each
 * role, 404 elsewhere.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fsp from 'fs/promises'
import * as http from 'http'
import * as path from 'path'
import { startPair, assertCleanSlate, cleanupAll, isolated, timed, cli, assertOneLineError, describeFailure } from './helpers'
import { statsLine, tableLines, type StatsLine } from '../src/cli/stats'

const t = suite('stats')

t.after(async () => {
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`stats.test: cleanup had to force: ${forced.join('; ')}`)
})

t('statsLine: rates per second between two looks, the lag as the second look says, the SRL fill', () => {
  const srl = (newestSeq: number, bytes: number): { bytes: number, capacityBytes: number, newestSeq: number, appliedSeq: number } => ({ bytes, capacityBytes: 1000, newestSeq, appliedSeq: newestSeq })
  const l = statsLine(
    { role: 'primary', srl: srl(100, 100), rlinks: [{ secondary: 'b:7400', state: 'connected', sentSeq: 90, dataAckedSeq: 80, lagUpdates: 20, lagBytes: 2000, lagSeconds: 0.5 }] },
    { role: 'primary', srl: srl(300, 250), rlinks: [{ secondary: 'b:7400', state: 'connected', sentSeq: 290, dataAckedSeq: 240, lagUpdates: 60, lagBytes: 6000, lagSeconds: 1.5 }] },
    2, new Date('2026-12-06T01:02:03Z'))
  assert.is(l.loggedPerS, 100)
  assert.is(l.srlFillPercent, 25)
  assert.equal(l.rlinks, [{ secondary: 'b:7400', state: 'connected', sentPerS: 100, appliedPerS: 80, lagUpdates: 60, lagBytes: 6000, lagSeconds: 1.5 }])
  assert.match(tableLines(l)[0], /^01:02:03 +25\.0 +100 +b:7400 +connected +100 +80 +60 +5\.9K +1\.5$/)
  const s = statsLine({ role: 'secondary', srl: null, receivedSeq: 10, appliedSeq: 5 }, { role: 'secondary', srl: null, receivedSeq: 20, appliedSeq: 20, connected: true }, 0.5, new Date())
  assert.equal([s.receivedPerS, s.appliedPerS, s.lagUpdates, s.connected], [20, 30, 0, true])
})

/** GET http://ADDRESS/PATH: status code and body. */
async function get (address: string, p: string): Promise<{ code: number, body: string }> {
  return await new Promise((resolve, reject) => {
    http.get(`http://${address}${p}`, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
}

/** The value of one sample line (`name{labels} value`) in Prometheus text, or undefined. */
function sample (text: string, line: string): number | undefined {
  const l = text.split('\n').find((x) => x.startsWith(line + ' '))
  return l === undefined ? undefined : Number(l.slice(line.length + 1))
}

t('stats on a replicating pair: NDJSON from the Primary, the table from the Secondary; bad flags are one line; --metrics serves each role\'s figures', isolated(120_000, async () => {
  const pair = await startPair({ srlSize: '16M', primaryExtraArgs: ['--metrics', '127.0.0.1:0'], secondaryExtraArgs: ['--metrics', '127.0.0.1:0'] })
  const dir = path.join(pair.primary.mount, 'w')
  await fsp.mkdir(dir)
  let writing = true
  const writer = (async () => { for (let i = 0; writing; i++) await fsp.writeFile(path.join(dir, `f${i % 50}`), `update ${i}\n`) })()
  try {
    const r = await cli(['stats', '--state', pair.primary.state, '--interval', '0.3', '--count', '3', '--json'])
    assert.is(r.code, 0, describeFailure(r))
    const lines = r.stdout.trim().split('\n').map((x) => JSON.parse(x) as StatsLine)
    assert.is(lines.length, 3, r.stdout)
    for (const l of lines) {
      assert.is(l.role, 'primary')
      assert.is(l.rlinks?.length, 1)
      assert.is(l.rlinks![0].secondary, pair.target)
      assert.ok(typeof l.rlinks![0].lagUpdates === 'number' && typeof l.rlinks![0].lagSeconds === 'number', JSON.stringify(l))
      assert.ok(l.srlFillPercent !== null && l.srlFillPercent >= 0 && l.srlFillPercent <= 100, JSON.stringify(l))
    }
    assert.ok(lines.some((l) => (l.loggedPerS ?? 0) > 0) && lines.some((l) => l.rlinks![0].sentPerS > 0), `updates were logged and sent while the writer wrote: ${r.stdout}`)
    const s = await cli(['stats', '--state', pair.secondary.state, '--interval', '0.3', '--count', '2'])
    assert.is(s.code, 0, describeFailure(s))
    const rows = s.stdout.trim().split('\n')
    assert.is(rows.length, 3, `a header and two lines: ${s.stdout}`)
    assert.match(rows[0], /received\/s +applied\/s +lag upd +connected/)
    assert.ok(rows.slice(1).every((x) => /^\d\d:\d\d:\d\d +[\d.]+ +[\d.]+ +[\d.]+ +\d+ +yes$/.test(x)), s.stdout)
  } finally {
    writing = false
    await writer.catch(() => {})
  }
  // --metrics, on both roles: where status says.
  await pair.caughtUp()
  const pm = (await pair.primaryStatus() as unknown as { metrics: string | null }).metrics
  const sm = (await pair.secondary.status() as unknown as { metrics: string | null }).metrics
  assert.ok(pm !== null && sm !== null, `status shows where the metrics are: ${String(pm)}, ${String(sm)}`)
  const pt = await get(pm, '/metrics')
  assert.is(pt.code, 200)
  const ps = await pair.primaryStatus()
  const newest = ps.srl.newestSeq ?? ps.srl.appliedSeq
  assert.is(sample(pt.body, 'replicafs_up{role="primary"}'), 1, pt.body)
  assert.is(sample(pt.body, 'replicafs_srl_capacity_bytes'), 16 * 1024 * 1024, pt.body)
  assert.ok((sample(pt.body, 'replicafs_srl_newest_seq') ?? -1) >= newest && newest > 0, pt.body)
  assert.is(sample(pt.body, `replicafs_rlink_state{secondary="${pair.target}",state="connected"}`), 1, pt.body)
  assert.is(sample(pt.body, `replicafs_rlink_lag_updates{secondary="${pair.target}"}`), 0, pt.body)
  assert.ok((sample(pt.body, `replicafs_rlink_data_acked_seq{secondary="${pair.target}"}`) ?? -1) >= newest, pt.body)
  assert.match(pt.body, /# HELP replicafs_rlink_lag_seconds /)
  const st = await get(sm, '/metrics')
  assert.is(st.code, 200)
  assert.is(sample(st.body, 'replicafs_up{role="secondary"}'), 1, st.body)
  assert.is(sample(st.body, 'replicafs_secondary_connected'), 1, st.body)
  assert.ok((sample(st.body, 'replicafs_secondary_applied_seq') ?? -1) >= newest, st.body)
  assert.is(sample(st.body, 'replicafs_mount_passthrough{transport="ll"}'), 1, `the Secondary's mount (the default transport) has passthrough: ${st.body}`)
  assert.is(sample(st.body, 'replicafs_mount_open_files{transport="ll"}'), 0, st.body)
  assert.is(sample(pt.body, `replicafs_mount_passthrough{transport="${process.env.REPLICAFS_TEST_PRIMARY_FUSE || 'll'}"}`), 0, pt.body)
  if ((process.env.REPLICAFS_TEST_PRIMARY_FUSE || 'll') === 'll') {
    // The Primary's ll mount handed every change to the daemon: counted, with where the time went.
    const fwd = sample(pt.body, 'replicafs_mount_forwarded_requests{transport="ll"}') ?? 0
    assert.ok(fwd >= 50, `the writer's changes were forwarded to the daemon: ${pt.body}`)
    for (const step of ['resolve', 'queue', 'handle']) {
      const secs = sample(pt.body, `replicafs_mount_forwarded_seconds{transport="ll",step="${step}"}`) ?? -1
      assert.ok(secs > 0 && secs / fwd < 1, `a mean ${step} time per request, above 0 and under a second: ${secs} s for ${fwd}`)
    }
  }
  assert.is((await get(pm, '/')).code, 404)
  // Transport, snapshots and errors by code.
  assert.ok((sample(pt.body, `replicafs_rlink_bytes_sent{secondary="${pair.target}"}`) ?? 0) > 0, pt.body)
  assert.is(sample(pt.body, `replicafs_rlink_tls{secondary="${pair.target}"}`), 0, pt.body)
  assert.ok((sample(st.body, 'replicafs_secondary_bytes_received') ?? 0) > 0, st.body)
  assert.is((await cli(['snapshot', 'create', '--state', pair.primary.state, 'm1'])).code, 0)
  await fsp.writeFile(path.join(pair.primary.mount, 'after-snapshot'), Buffer.alloc(64 * 1024, 7))
  await fsp.writeFile(path.join(pair.primary.mount, 'after-snapshot'), Buffer.alloc(64 * 1024, 8))
  assertOneLineError(await cli(['snapshot', 'delete', '--state', pair.primary.state, 'no-such-snapshot']), ['no-such-snapshot'])
  const pt2 = await get(pm, '/metrics')
  assert.is(sample(pt2.body, 'replicafs_snapshots'), 1, pt2.body)
  assert.ok(sample(pt2.body, 'replicafs_snapshot_bytes{snapshot="m1"}') !== undefined, pt2.body)
  assert.ok((sample(pt2.body, 'replicafs_errors_total{code="NOT_FOUND"}') ?? 0) >= 1, `the failed delete counts as NOT_FOUND: ${pt2.body}`)

  assertOneLineError(await cli(['stats', '--state', pair.primary.state, '--interval', '0']), ['--interval'])
  assertOneLineError(await cli(['stats', '--state', pair.primary.state, '--count', 'x']), ['--count'])
  await pair.stop()
}))

t('leaves no FUSE mounts or daemons behind', timed(60_000, assertCleanSlate))

t.run()
