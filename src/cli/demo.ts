/**
 * `replicafs demo`: the README's main job. In a temporary working directory it starts a Primary,
 * runs a small application workload through the mount, shows the SRL, crashes the daemon with
 * kill -9 and shows recovery replaying the SRL, then stops and cleans up, saying what happens at
 * each step. (Secondaries, IBC and snapshots join the demo as those issues land.)
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFileSync, spawnSync } from 'node:child_process'
import { parse, helpText, type FlagSpec } from './args'
import { alive } from '../daemon'

export const DEMO_FLAGS: FlagSpec = {
  workdir: { type: 'string', arg: 'DIR', help: 'where to put the demo directories (default: a new temporary directory)' },
  keep: { type: 'boolean', help: 'keep the working directory afterwards' },
  help: { type: 'boolean', help: 'show this help' }
}
export const DEMO_HELP = helpText('replicafs demo [--workdir DIR] [--keep]', 'Runs a local Primary, a workload through its mount, a crash and its recovery, and cleans up.', DEMO_FLAGS)

const bin = path.join(__dirname, '..', '..', '..', 'bin', 'replicafs')

function say (text: string): void { process.stdout.write(`\n== ${text}\n`) }
function show (cmd: string, args: string[], cwd?: string): string {
  process.stdout.write(`$ ${[cmd, ...args].join(' ')}\n`)
  const out = execFileSync(cmd, args, { cwd, encoding: 'utf8', timeout: 60_000 })
  process.stdout.write(out.replace(/\n$/, '').replace(/^/gm, '  ') + '\n')
  return out
}
function cli (args: string[]): string { return show(process.execPath, [bin, ...args]) }

export async function demoCommand (argv: string[]): Promise<number> {
  const { values } = parse('demo', argv, DEMO_FLAGS)
  if (values.help) { process.stdout.write(DEMO_HELP); return 0 }
  const work = typeof values.workdir === 'string' ? path.resolve(values.workdir) : fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-demo-'))
  const data = path.join(work, 'data')
  const mnt = path.join(work, 'mnt')
  const state = path.join(work, 'state')
  for (const d of [data, mnt]) fs.mkdirSync(d, { recursive: true })
  let running = false
  try {
    say(`Working in ${work}: data directory, mount point and state directory`)
    cli(['primary', '--data', data, '--mount', mnt, '--state', state, '--srl-size', '16M', '--daemon'])
    running = true

    say('An application writes through the mount; every change is journaled in the SRL before it is acknowledged')
    fs.mkdirSync(path.join(mnt, 'app'))
    fs.writeFileSync(path.join(mnt, 'app', 'config.txt'), 'mode=replicated\n')
    fs.renameSync(path.join(mnt, 'app', 'config.txt'), path.join(mnt, 'app', 'config'))
    fs.symlinkSync('config', path.join(mnt, 'app', 'current'))
    if (spawnSync('sqlite3', ['-version']).status === 0) {
      show('sqlite3', [path.join(mnt, 'app', 'orders.db'), 'CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT); ' +
        Array.from({ length: 20 }, (_, i) => `INSERT INTO orders(item) VALUES ('item ${i}');`).join(' ') + ' SELECT count(*) FROM orders;'])
    }
    show('ls', ['-l', path.join(mnt, 'app')])
    cli(['status', '--state', state])

    say('The daemon is killed with kill -9 in the middle of its work; the SRL holds what was acknowledged')
    const fd = fs.openSync(path.join(mnt, 'app', 'journal.log'), 'w')
    for (let i = 0; i < 100; i++) fs.writeSync(fd, `entry ${i}\n`)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    const pid = parseInt(fs.readFileSync(path.join(state, 'daemon.pid'), 'utf8'), 10)
    process.kill(pid, 'SIGKILL')
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 50))
    running = false
    process.stdout.write(`  killed pid ${pid}; the mount point is now stale\n`)

    say('Restarting: the stale mount is cleaned up and the SRL replays what was logged but not applied')
    cli(['primary', '--data', data, '--mount', mnt, '--state', state, '--daemon'])
    running = true
    const lines = fs.readFileSync(path.join(mnt, 'app', 'journal.log'), 'utf8').trim().split('\n').length
    process.stdout.write(`  journal.log has ${lines} of 100 entries after recovery\n`)
    const log = fs.readFileSync(path.join(state, 'daemon.log'), 'utf8').split('\n').filter((l) => /stale|recovered/.test(l))
    for (const l of log) process.stdout.write(`  log: ${l}\n`)
    cli(['status', '--state', state])

    say('Stopping: the daemon unmounts, applies and checkpoints the SRL, and exits')
    cli(['stop', '--state', state])
    running = false
    show('ls', ['-l', path.join(data, 'app')])
    say('Done. Replication to a Secondary, IBC messages and snapshots come with the next issues.')
    return lines === 100 ? 0 : 1
  } finally {
    if (running) spawnSync(process.execPath, [bin, 'stop', '--state', state], { stdio: 'ignore', timeout: 30_000 })
    if (!values.keep && typeof values.workdir !== 'string') fs.rmSync(work, { recursive: true, force: true })
  }
}
