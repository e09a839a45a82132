/**
 * `replicafs demo`: the README's main job. In a temporary working directory it starts a Secondary
 * and a Primary on loopback, runs a small application workload through the Primary mount, shows
 * the Secondary applying it, crashes the Primary with kill -9 and shows recovery and the RLINK
 * resuming, then stops both and compares the data directories, saying what happens at each step.
 * Then an IBC-consistent snapshot: the Secondary freezes at the Primary's `ibc-send`, snapshots,
 * unfreezes, and the snapshot keeps showing the tree at the message while replication goes on;
 * and an online verify of the two trees.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFileSync, spawnSync, spawn } from 'node:child_process'
import { parse, helpText, type FlagSpec } from './args'
import { alive } from '../daemon'
import { request } from '../control'

export const DEMO_FLAGS: FlagSpec = {
  workdir: { type: 'string', arg: 'DIR', help: 'where to put the demo directories (default: a new temporary directory)' },
  keep: { type: 'boolean', help: 'keep the working directory afterwards' },
  help: { type: 'boolean', help: 'show this help' }
}
export const DEMO_HELP = helpText('replicafs demo [--workdir DIR] [--keep]', 'Runs a local Primary and Secondary, a workload, a crash of the Primary and its recovery, an IBC-consistent\nsnapshot on the Secondary, an online verify, and cleans up.', DEMO_FLAGS)

const bin = path.join(__dirname, '..', '..', '..', 'bin', 'replicafs')

function say (text: string): void { process.stdout.write(`\n== ${text}\n`) }
function show (cmd: string, args: string[], cwd?: string): string {
  process.stdout.write(`$ ${[cmd, ...args].join(' ')}\n`)
  const out = execFileSync(cmd, args, { cwd, encoding: 'utf8', timeout: 60_000 })
  if (out.trim() !== '') process.stdout.write(out.replace(/\n$/, '').replace(/^/gm, '  ') + '\n')
  return out
}
function cli (args: string[]): string { return show(process.execPath, [bin, ...args]) }

async function statusOf (state: string): Promise<any> { return request(state, { cmd: 'status' }) }

/** Polls until `ok` holds, for at most `ms`; false if it never did. */
async function until (ok: () => Promise<boolean>, ms = 60_000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    try { if (await ok()) return true } catch {}
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return false
}

async function caughtUp (pstate: string): Promise<boolean> {
  return until(async () => {
    const s = await statusOf(pstate)
    return s.rlinks.every((l: { state: string, dataAckedSeq: number }) => l.state === 'connected' && l.dataAckedSeq >= (s.srl.newestSeq ?? s.srl.appliedSeq))
  })
}

interface Dirs { data: string, mnt: string, state: string }

/** What the steps share: both hosts' directories, and which daemons are running. */
interface Demo { p: Dirs, s: Dirs, secret: string, app: string, primaryArgs: string[], running: Set<string> }

export async function demoCommand (argv: string[]): Promise<number> {
  const { values } = parse('demo', argv, DEMO_FLAGS)
  if (values.help) { process.stdout.write(DEMO_HELP); return 0 }
  const work = typeof values.workdir === 'string' ? path.resolve(values.workdir) : fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-demo-'))
  const dirs = (host: string): Dirs => ({ data: path.join(work, host, 'data'), mnt: path.join(work, host, 'mnt'), state: path.join(work, host, 'state') })
  const d: Demo = { p: dirs('primary'), s: dirs('secondary'), secret: path.join(work, 'secret'), app: '', primaryArgs: [], running: new Set() }
  d.app = path.join(d.p.mnt, 'app')
  for (const dir of [d.p.data, d.p.mnt, d.s.data, d.s.mnt]) fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(d.secret, `demo-${process.pid}-${Date.now()}\n`, { mode: 0o600 })
  try {
    say(`Working in ${work}: a Secondary and a Primary on this machine, talking TCP on loopback`)
    await start(d)
    let ok = await workload(d)
    ok = await crashAndRecover(d) && ok
    ok = await consistentBackup(d) && ok
    ok = onlineVerify(d) && ok
    ok = stopAndCompare(d) && ok
    say(ok ? 'Done: every check passed.' : 'Done, but a check above failed.')
    return ok ? 0 : 1
  } finally {
    for (const st of d.running) spawnSync(process.execPath, [bin, 'stop', '--state', st], { stdio: 'ignore', timeout: 30_000 })
    if (!values.keep && typeof values.workdir !== 'string') fs.rmSync(work, { recursive: true, force: true })
  }
}

async function start (d: Demo): Promise<void> {
  const { p, s } = d
  cli(['secondary', '--data', s.data, '--mount', s.mnt, '--state', s.state, '--listen', '127.0.0.1:0', '--secret-file', d.secret, '--srl-size', '16M', '--daemon'])
  d.running.add(s.state)
  const address = (await statusOf(s.state)).listen as string
  process.stdout.write(`  the Secondary listens on ${address}\n`)
  d.primaryArgs = ['primary', '--data', p.data, '--mount', p.mnt, '--state', p.state, '--secondary', address, '--secret-file', d.secret, '--daemon']
  cli([...d.primaryArgs, '--srl-size', '16M'])
  d.running.add(p.state)
}

/** An application's changes through the Primary mount, then the same tree on the Secondary. */
async function workload (d: Demo): Promise<boolean> {
  const { p, s, app } = d
  say('An application writes through the Primary mount; every change is journaled in the SRL, then sent to the Secondary')
  fs.mkdirSync(app)
  fs.writeFileSync(path.join(app, 'config.txt'), 'mode=replicated\n')
  fs.renameSync(path.join(app, 'config.txt'), path.join(app, 'config'))
  fs.symlinkSync('config', path.join(app, 'current'))
  if (spawnSync('sqlite3', ['-version']).status === 0) {
    show('sqlite3', [path.join(app, 'orders.db'), 'CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT); ' +
      Array.from({ length: 20 }, (_, i) => `INSERT INTO orders(item) VALUES ('item ${i}');`).join(' ') + ' SELECT count(*) FROM orders;'])
  }
  show('ls', ['-l', app])
  let ok = await caughtUp(p.state)
  cli(['status', '--state', p.state])

  say('The Secondary applied every update in order; its read-only mount shows the same tree')
  show('ls', ['-l', path.join(s.mnt, 'app')])
  cli(['status', '--state', s.state])
  try { fs.writeFileSync(path.join(s.mnt, 'app', 'config'), 'changed on the Secondary\n'); ok = false } catch (err) {
    process.stdout.write(`  writing on the Secondary mount fails: ${(err as NodeJS.ErrnoException).code}\n`)
  }
  return ok
}

/** kill -9 of the Primary in the middle of its work, its restart, and the RLINK resuming. */
async function crashAndRecover (d: Demo): Promise<boolean> {
  const { p, s, app } = d
  say('The Primary daemon is killed with kill -9 in the middle of its work; its SRL holds what was acknowledged')
  const fd = fs.openSync(path.join(app, 'journal.log'), 'w')
  for (let i = 0; i < 100; i++) fs.writeSync(fd, `entry ${i}\n`)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  const pid = parseInt(fs.readFileSync(path.join(p.state, 'daemon.pid'), 'utf8'), 10)
  process.kill(pid, 'SIGKILL')
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 50))
  d.running.delete(p.state)
  process.stdout.write(`  killed pid ${pid}; the Primary mount point is now stale\n`)

  say('Restarting the Primary: the stale mount is cleaned up, the SRL replays, the RLINK resumes where the Secondary stopped')
  cli(d.primaryArgs)
  d.running.add(p.state)
  let ok = true
  const lines = fs.readFileSync(path.join(app, 'journal.log'), 'utf8').trim().split('\n').length
  process.stdout.write(`  journal.log has ${lines} of 100 entries after recovery\n`)
  if (lines !== 100) ok = false
  for (const l of fs.readFileSync(path.join(p.state, 'daemon.log'), 'utf8').split('\n').filter((l) => /stale|recovered|RLINK/.test(l))) process.stdout.write(`  log: ${l}\n`)
  ok = await caughtUp(p.state) && ok
  const onSecondary = fs.readFileSync(path.join(s.mnt, 'app', 'journal.log'), 'utf8').trim().split('\n').length
  process.stdout.write(`  the Secondary's journal.log has ${onSecondary} of 100 entries\n`)
  if (onSecondary !== 100) ok = false
  cli(['status', '--state', p.state])
  return ok
}

/** `sync && ibc-send`, the Secondary frozen at the mark, a snapshot, and replication going on. */
async function consistentBackup (d: Demo): Promise<boolean> {
  const { p, s, app } = d
  say('A consistent backup point: the Secondary waits for an IBC message; the Primary sends it with `sync && ibc-send`')
  cli(['ibc', 'register', '--state', s.state, 'backup'])
  const receiver = spawn(process.execPath, [bin, 'ibc', 'receive', '--state', s.state, 'backup', '--json', '--timeout', '60'], { stdio: ['ignore', 'pipe', 'inherit'] })
  let received = ''
  receiver.stdout.on('data', (b: Buffer) => { received += b.toString() })
  const receiverDone = new Promise<number>((resolve) => receiver.on('close', (code) => resolve(code ?? 1)))
  show(path.join(path.dirname(bin), 'ibc-send'), ['--state', p.state, 'backup', 'orders are consistent now'])
  fs.writeFileSync(path.join(app, 'after-the-mark.txt'), 'written after the IBC message\n')
  let ok = await receiverDone === 0
  process.stdout.write(`  ibc receive on the Secondary printed: ${received.trim()}\n`)
  process.stdout.write('  the Secondary is now frozen at the message: later updates are logged, not applied\n')
  cli(['snapshot', 'create', 'nightly', '--state', s.state])
  cli(['ibc', 'unfreeze', '--state', s.state, 'backup'])
  cli(['ibc', 'unregister', '--state', s.state, 'backup'])
  ok = await caughtUp(p.state) && ok
  cli(['snapshot', 'list', '--state', s.state])
  const inSnapshot = fs.existsSync(path.join(s.mnt, '.snapshots', 'nightly', 'app', 'after-the-mark.txt'))
  const live = fs.existsSync(path.join(s.mnt, 'app', 'after-the-mark.txt'))
  process.stdout.write(`  after-the-mark.txt: ${live ? 'present' : 'MISSING'} on the live Secondary, ${inSnapshot ? 'PRESENT' : 'absent'} in .snapshots/nightly (it came after the mark)\n`)
  if (!live || inSnapshot) ok = false
  show('ls', ['-l', path.join(s.mnt, '.snapshots', 'nightly', 'app')])
  if (spawnSync('sqlite3', ['-version']).status === 0) {
    show('sqlite3', [path.join(s.mnt, '.snapshots', 'nightly', 'app', 'orders.db'), '-readonly', 'PRAGMA integrity_check; SELECT count(*) FROM orders;'])
  }
  return ok
}

/** `replicafs verify` while both run: the two trees compared at one sequence number, by hashes. */
function onlineVerify (d: Demo): boolean {
  say('An online verify: both sides snapshot the tree after the same update and compare it by hashes, while replication goes on')
  try {
    cli(['verify', '--state', d.p.state])
    return true
  } catch (err) {
    process.stdout.write(`  verify found differences or could not run: ${(err as Error).message}\n`)
    return false
  }
}

/** Both daemons stopped the normal way, then the two data directories compared. */
function stopAndCompare (d: Demo): boolean {
  const { p, s } = d
  say('Stopping both daemons: each unmounts, applies and checkpoints its SRL, and exits')
  cli(['stop', '--state', p.state])
  d.running.delete(p.state)
  cli(['stop', '--state', s.state])
  d.running.delete(s.state)
  const diff = spawnSync('diff', ['-r', '--no-dereference', p.data, s.data], { encoding: 'utf8' })
  process.stdout.write(diff.status === 0 ? '  diff -r of the two data directories: identical\n' : `  the data directories differ:\n${diff.stdout}`)
  return diff.status === 0
}
