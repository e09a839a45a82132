/**
 * Online verify (issue 12, docs/ARCHITECTURE.md "Online verify"): `replicafs verify` compares the
 * Primary's tree with a Secondary's at one sequence number while writes go on, names every path
 * that differs (a byte changed behind replicafs's back in the Secondary's data directory included,
 * with its byte range), and `--repair` resends it. Real daemons, FUSE mounts, TCP on loopback.
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as crypto from 'crypto'
import * as fs from 'fs'
import * as fsp from 'fs/promises'
import * as path from 'path'
import { assertCleanSlate, cleanupAll, isolated, cli, describeFailure, execOk, helperScript, waitFor, type ExecResult } from './helpers'
import { withMulti, waitRlink, type Multi } from './helpers/multi'
import { closeAllProxies } from './helpers/proxy'
import { snapshotTree, diffSnapshots, assertNoDiffs } from './helpers/replica-tree'
import { register, ibcSend, receive, ibcOk } from './helpers/ibc'

const t = suite('verify')

t.before(async () => { await assertCleanSlate() })
t.after(async () => {
  await closeAllProxies()
  const forced = await cleanupAll()
  if (forced.length > 0) console.error(`verify.test: cleanup had to force: ${forced.join('; ')}`)
})

interface Difference { p: string, what: string[], ranges?: Array<[number, number]>, below?: number }
interface Answer { seq: number, identical: boolean, differing: number, differences: Difference[], entries: { primary: number, secondary: number }, repaired: boolean | null, root: { primary: string, secondary: string } }

async function verify (m: Multi, extra: string[] = []): Promise<{ r: ExecResult, a: Answer | null }> {
  const r = await cli(['verify', '--state', m.primary.state, '--json', ...extra], { timeoutMs: 120_000 })
  let a: Answer | null = null
  if (r.code === 0 || r.code === 1) {
    try { a = JSON.parse(r.stdout) as Answer } catch { throw new Error(`verify printed no JSON: ${describeFailure(r)}`) }
  }
  return { r, a }
}

const CHUNK = 256 * 1024

/** Gives `target` the atime and mtime of `ref`, to the nanosecond (Node's utimes rounds them). */
async function sameTimes (ref: string, target: string): Promise<void> {
  await execOk('touch', ['-h', '-r', ref, target])
}

/** A tree of every kind of entry, through the Primary's mount. */
async function mixedTree (mount: string): Promise<void> {
  await fsp.mkdir(path.join(mount, 'docs/deep/er'), { recursive: true })
  for (let i = 0; i < 50; i++) await fsp.writeFile(path.join(mount, `docs/f${i}.txt`), `document ${i}\n`.repeat(i + 1))
  await fsp.writeFile(path.join(mount, 'docs/deep/er/big.bin'), crypto.randomBytes(3 * CHUNK + 1234))
  await fsp.link(path.join(mount, 'docs/f1.txt'), path.join(mount, 'docs/deep/hardlink'))
  await fsp.symlink('../f2.txt', path.join(mount, 'docs/deep/link'))
  const fh = await fsp.open(path.join(mount, 'sparse'), 'w')
  await fh.write(Buffer.from('end'), 0, 3, 5 * CHUNK)
  await fh.close()
  await execOk(process.execPath, [helperScript('xattr-tool'), 'set', path.join(mount, 'docs/f3.txt'), 'user.tag', Buffer.from('blue').toString('hex')])
  await execOk('mkfifo', [path.join(mount, 'docs/fifo')])
}

t('verify: identical trees while writes go on (exit 0, both sides at one sequence number); a byte, a mode, a file and a directory changed behind replicafs\'s back in the Secondary\'s data directory are named (exit 1, with the byte range); --repair resends them, and verify is 0 again', isolated(240_000, async () => {
  await withMulti({ count: 1 }, async (m) => {
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected')
    await mixedTree(m.primary.mount)
    await m.caughtUp()

    // Writes during the verify: each side compares its snapshot, so they are no difference.
    let writing = true
    const writer = (async () => {
      await fsp.mkdir(path.join(m.primary.mount, 'busy'), { recursive: true })
      for (let i = 0; writing; i++) await fsp.writeFile(path.join(m.primary.mount, `busy/w${i % 40}`), crypto.randomBytes(4096 + i))
    })()
    let first: Awaited<ReturnType<typeof verify>>
    try {
      first = await verify(m)
    } finally {
      writing = false
      await writer
    }
    assert.is(first.r.code, 0, `identical trees verify with exit 0: ${describeFailure(first.r)}${await m.logs()}`)
    assert.ok(first.a!.identical)
    assert.ok(first.a!.entries.primary > 55, `every entry walked: ${first.a!.entries.primary}`)
    assert.is(first.a!.entries.secondary, first.a!.entries.primary)
    assert.is(first.a!.root.secondary, first.a!.root.primary, 'equal Merkle roots')
    assert.match(await m.primary.log(), /verify [0-9a-f]+: identical after sequence number \d+/)
    // Both snapshots are gone.
    assert.equal(fs.readdirSync(path.join(m.primary.mount, '.snapshots')).filter((n) => n.startsWith('verify-')), [])
    assert.equal(fs.readdirSync(path.join(m.secondaries[0].mount, '.snapshots')).filter((n) => n.startsWith('verify-')), [])

    // Behind replicafs's back, on the Secondary: one byte in the third chunk (size and mtime kept),
    // a mode, a file added, a directory removed (its parents' times put back).
    await m.caughtUp()
    const sdata = m.secondaries[0].data
    const pdata = m.primary.data
    const big = path.join(sdata, 'docs/deep/er/big.bin')
    const fd = fs.openSync(big, 'r+')
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, 2 * CHUNK + 100)
    fs.writeSync(fd, Buffer.from([b[0] ^ 0xff]), 0, 1, 2 * CHUNK + 100)
    fs.closeSync(fd)
    await sameTimes(path.join(pdata, 'docs/deep/er/big.bin'), big)
    fs.chmodSync(path.join(sdata, 'docs/f7.txt'), 0o600)
    fs.writeFileSync(path.join(sdata, 'docs/stray'), 'not the Primary\'s\n')
    const dir = path.join(sdata, 'docs/deep/er')
    fs.rmSync(dir, { recursive: true })
    for (const d of ['docs', 'docs/deep']) await sameTimes(path.join(pdata, d), path.join(sdata, d))

    const second = await verify(m)
    assert.is(second.r.code, 1, `differences exit 1: ${describeFailure(second.r)}`)
    const by = new Map(second.a!.differences.map((d) => [d.p, d]))
    assert.equal(by.get('/docs/f7.txt')?.what, ['mode'], JSON.stringify(second.a!.differences))
    assert.equal(by.get('/docs/stray')?.what, ['extra'])
    assert.equal(by.get('/docs/deep/er')?.what, ['missing'])
    assert.is(by.get('/docs/deep/er')?.below, 1, 'big.bin below the missing directory is counted into it')
    assert.is(second.a!.differing, 3, JSON.stringify(second.a!.differences))

    // The byte: the directory back as the Primary has it, then only the byte changed.
    await fsp.cp(path.join(pdata, 'docs/deep/er'), dir, { recursive: true })
    const fd2 = fs.openSync(big, 'r+')
    fs.writeSync(fd2, Buffer.from([b[0] ^ 0xff]), 0, 1, 2 * CHUNK + 100)
    fs.closeSync(fd2)
    for (const p of ['docs/deep/er/big.bin', 'docs/deep/er', 'docs/deep']) await sameTimes(path.join(pdata, p), path.join(sdata, p))
    const third = await verify(m)
    assert.is(third.r.code, 1, describeFailure(third.r))
    const bigDiff = third.a!.differences.find((d) => d.p === '/docs/deep/er/big.bin')
    assert.ok(bigDiff !== undefined, `the changed byte is found by path: ${JSON.stringify(third.a!.differences)}`)
    assert.equal(bigDiff!.what, ['content'], 'only its bytes differ (size and mtime were kept)')
    assert.equal(bigDiff!.ranges, [[2 * CHUNK, CHUNK]], 'the range is the chunk holding the byte')
    // The text output names it too.
    const text = await cli(['verify', '--state', m.primary.state], { timeoutMs: 120_000 })
    assert.is(text.code, 1, describeFailure(text))
    assert.match(text.stdout, /\/docs\/deep\/er\/big\.bin: content \(bytes 524288-786431\)/)
    assert.match(text.stdout, /\/docs\/f7\.txt: mode/)

    // --repair: resent by difference from the change map; the Secondary's snapshot kept meanwhile.
    const repair = await verify(m, ['--repair'])
    assert.is(repair.r.code, 1, `differences were found: exit 1 ${describeFailure(repair.r)}${await m.logs()}`)
    assert.is(repair.a!.repaired, true, describeFailure(repair.r))
    assert.match(await m.primary.log(), /verify --repair: \d+ paths differ: they go to its change map/)
    assert.match(await m.secondaries[0].log(), /snapshot resync-\w+ taken/)
    const after = await verify(m)
    assert.is(after.r.code, 0, `identical after the repair: ${describeFailure(after.r)}${await m.logs()}`)
    await m.caughtUp()
    const [x, y] = await Promise.all([snapshotTree(pdata), snapshotTree(sdata)])
    assertNoDiffs(diffSnapshots(x, y, { a: 'primary data', b: 'secondary data', mtime: 'ns' }), 'after verify --repair')
  })
}))

t('verify: bad input, a Secondary frozen by IBC and a disconnected RLINK exit 2 with one line naming what is wrong, nothing changed', isolated(120_000, async () => {
  await withMulti({ count: 1 }, async (m) => {
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected')
    await fsp.writeFile(path.join(m.primary.mount, 'a'), 'a\n')
    await m.caughtUp()
    const wrong = await cli(['verify', '--state', m.primary.state, '--secondary', '127.0.0.1:1'])
    assert.is(wrong.code, 2, describeFailure(wrong))
    assert.match(wrong.stderr, /no RLINK to 127\.0\.0\.1:1/)
    assert.not.match(wrong.stderr, /\n\s+at /, 'no stack trace')
    const flag = await cli(['verify', '--state', m.primary.state, '--bogus'])
    assert.is(flag.code, 2, describeFailure(flag))
    const onSecondary = await cli(['verify', '--state', m.secondaries[0].state])
    assert.is(onSecondary.code, 2, describeFailure(onSecondary))
    assert.match(onSecondary.stderr, /verify/)

    // A Secondary frozen at an IBC message cannot get to the Primary's sequence number.
    const sstate = m.secondaries[0].state
    await register(sstate, 'backup')
    await ibcSend(m.primary.state, 'backup', 'freeze here')
    await receive(sstate, 'backup')
    await fsp.writeFile(path.join(m.primary.mount, 'after-the-mark'), 'b\n')
    const frozen = await cli(['verify', '--state', m.primary.state])
    assert.is(frozen.code, 2, describeFailure(frozen))
    assert.match(frozen.stderr, /frozen at the IBC message of sequence number \d+ \(unfreeze it first\)/)
    await ibcOk(sstate, 'unfreeze', ['backup'])
    await ibcOk(sstate, 'unregister', ['backup'])
    await m.caughtUp()
    const thawed = await cli(['verify', '--state', m.primary.state])
    assert.is(thawed.code, 0, `unfrozen, it verifies: ${describeFailure(thawed)}`)

    await m.secondaries[0].stop()
    await waitRlink(m, 0, (l) => l.state !== 'connected', 'down')
    const down = await cli(['verify', '--state', m.primary.state])
    assert.is(down.code, 2, describeFailure(down))
    assert.match(down.stderr, /the RLINK to 127\.0\.0\.1:\d+ is (disconnected|connecting)/)
    assert.is(down.stderr.trim().split('\n').length, 1, 'one line')
    const list = fs.readdirSync(path.join(m.primary.mount, '.snapshots'))
    assert.equal(list, [], 'no snapshot left behind')
    await m.restartSecondary(0) // withMulti stops what runs
  })
}))

t('verify: the RLINK cut during a verify ends it with exit 2 naming the link; a verify snapshot left by a kill -9 is deleted at the next start, on both sides', isolated(180_000, async () => {
  await withMulti({ count: 1, via: [true] }, async (m) => {
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected')
    await fsp.writeFile(path.join(m.primary.mount, 'a'), 'a\n')
    await m.caughtUp()
    // VERIFY_BEGIN held in the proxy, then the connection cut.
    const proxy = m.proxies[0]!
    proxy.stall()
    const running = cli(['verify', '--state', m.primary.state], { timeoutMs: 60_000 })
    await waitFor(async () => ((await m.status()) as unknown as { verify: unknown[] }).verify.length > 0 ? true : undefined, { timeoutMs: 30_000, what: 'the verify to be running', intervalMs: 50 })
    proxy.cut()
    proxy.unstall()
    const cut = await running
    assert.is(cut.code, 2, describeFailure(cut))
    assert.match(cut.stderr, /went down during the verify/)
    assert.equal(fs.readdirSync(path.join(m.primary.mount, '.snapshots')), [], 'the Primary deleted its snapshot')
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected again')

    // A daemon killed mid-verify leaves its verify-<id> snapshot: the next start deletes it.
    for (const state of [m.primary.state, m.secondaries[0].state]) {
      const r = await cli(['snapshot', 'create', 'verify-0badf00d', '--state', state])
      assert.is(r.code, 0, describeFailure(r))
    }
    await m.secondaries[0].kill9()
    await m.restartSecondary(0)
    await m.primary.kill9()
    await m.restartPrimary()
    for (const [who, d] of [['Primary', m.primary], ['Secondary', m.secondaries[0]]] as const) {
      assert.match(await d.log(), /snapshot verify-0badf00d deleted: its verify did not finish before the last stop/, who)
      assert.equal(fs.readdirSync(path.join(d.mount, '.snapshots')), [], `${who}: no verify snapshot left`)
    }
    await waitRlink(m, 0, (l) => l.state === 'connected', 'connected after the restarts')
    const again = await cli(['verify', '--state', m.primary.state])
    assert.is(again.code, 0, describeFailure(again))
  })
}))

t.run()
