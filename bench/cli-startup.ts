/**
 * Start-up of the CLI as shell scripts call it: `node dist/bench/cli-startup.js [--reps N]`.
 *
 * A Secondary and a Primary on loopback (temporary directories, real mounts), then the median of
 * N runs (default 21) of each command, with `node -e 0` (Node's bare start) measured in the same
 * run, interleaved, so the ratio does not drift with the machine's load:
 *   help      replicafs --help (no daemon)
 *   status    replicafs status --state P (a control-socket command against the running Primary)
 *   json      replicafs status --json --state P
 *   sync      replicafs sync --state P
 *   ibc       `replicafs sync && ibc-send APP` on the Primary to the return of an `ibc receive APP`
 *             already waiting on the Secondary (then `ibc unfreeze`, not timed): the round trip
 *             a backup script waits for
 * The issue's aim: control-socket commands within 1.3x Node's bare start. Writes its table into
 * docs/PERFORMANCE.md ('CLI start-up', kept in bench/results/cli-startup.md, which a full
 * `npm run bench` splices back). Run it alone: with 2 cores, anything else running is measured too.
 */
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import * as crypto from 'crypto'
import { spawn } from 'child_process'
import { startDaemon, cliPath, type Daemon } from './daemon'
import { run } from './proc'
import { request } from '../src/control'
import { spliceNamed } from './replication-doc'
import { CLI_HEADING } from './sync-doc'

function arg (name: string, dflt: number): number {
  const i = process.argv.indexOf(name)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function timedOk (argv: string[], cwd: string): Promise<number> {
  const r = await run(argv, { cwd, timeoutMs: 60_000 })
  if (r.code !== 0 || r.timedOut) throw new Error(`${argv.join(' ')} failed (${r.timedOut ? 'timed out' : `exit ${String(r.code)}`}): ${(r.stderr || r.stdout).trim().slice(-400)}`)
  return r.seconds
}

async function main (): Promise<void> {
  const reps = arg('--reps', 21)
  const repo = path.resolve(__dirname, '..', '..')
  const node = process.execPath
  const cli = cliPath(repo)
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-bench-cli-'))
  const log = (s: string): void => { process.stderr.write(s + '\n') }
  const daemons: Daemon[] = []
  try {
    const secret = path.join(work, 'secret')
    fs.writeFileSync(secret, crypto.randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
    const S = { data: path.join(work, 's', 'data'), mount: path.join(work, 's', 'mnt'), state: path.join(work, 's', 'state') }
    const P = { data: path.join(work, 'p', 'data'), mount: path.join(work, 'p', 'mnt'), state: path.join(work, 'p', 'state') }
    daemons.push(await startDaemon(repo, 'secondary', S, { srlSizeBytes: 16 * 1024 * 1024, extraArgs: ['--listen', '127.0.0.1:0', '--secret-file', secret], log }))
    const ss = await request(S.state, { cmd: 'status' }) as { listen?: string }
    if (ss.listen === undefined) throw new Error('the Secondary reports no listen address')
    daemons.push(await startDaemon(repo, 'primary', P, { srlSizeBytes: 16 * 1024 * 1024, extraArgs: ['--secondary', ss.listen, '--secret-file', secret], log }))
    const deadline = Date.now() + 60_000
    for (;;) {
      const ps = await request(P.state, { cmd: 'status' }) as { rlinks?: Array<{ state?: string }> }
      if (ps.rlinks?.[0]?.state === 'connected') break
      if (Date.now() > deadline) throw new Error('the RLINK did not connect within 60 s')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    await timedOk([node, cli, 'ibc', 'register', '--state', S.state, 'bench'], repo)

    const cmds: Record<string, () => Promise<number>> = {
      node: async () => await timedOk([node, '-e', '0'], repo),
      help: async () => await timedOk([node, cli, '--help'], repo),
      status: async () => await timedOk([node, cli, 'status', '--state', P.state], repo),
      json: async () => await timedOk([node, cli, 'status', '--json', '--state', P.state], repo),
      sync: async () => await timedOk([node, cli, 'sync', '--state', P.state], repo),
      ibc: async () => {
        const receiver = spawn(node, [cli, 'ibc', 'receive', '--state', S.state, 'bench', '--timeout', '60'], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] })
        const out: Buffer[] = []
        receiver.stdout.on('data', (b: Buffer) => out.push(b))
        receiver.stderr.on('data', (b: Buffer) => out.push(b))
        const received = new Promise<[number | null, bigint]>((resolve) => receiver.on('close', (c) => resolve([c, process.hrtime.bigint()])))
        // The receiver is waiting once the Secondary lists it (status.ibc.receiving).
        const until = Date.now() + 30_000
        for (;;) {
          const st = await request(S.state, { cmd: 'status' }) as { ibc?: { receiving?: string[] } }
          if (st.ibc?.receiving?.includes('bench') === true) break
          if (Date.now() > until) throw new Error('the ibc receive did not show as waiting in the Secondary\'s status within 30 s')
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        const t0 = process.hrtime.bigint()
        const shell = await run(['sh', '-c', `"${node}" "${cli}" sync --state "${P.state}" && "${node}" "${path.join(repo, 'bin', 'ibc-send')}" --state "${P.state}" bench`], { cwd: repo, timeoutMs: 60_000 })
        if (shell.code !== 0) throw new Error(`sync && ibc-send failed: ${shell.stderr.trim()}`)
        const [code, t1] = await received
        if (code !== 0) throw new Error(`ibc receive exited ${String(code)}: ${Buffer.concat(out).toString().trim()}`)
        await timedOk([node, cli, 'ibc', 'unfreeze', '--state', S.state, 'bench'], repo)
        return Number(t1 - t0) / 1e9
      }
    }
    const samples: Record<string, number[]> = Object.fromEntries(Object.keys(cmds).map((k) => [k, []]))
    for (const k of Object.keys(cmds)) await cmds[k]() // warm the page cache
    for (let i = 0; i < reps; i++) {
      for (const k of Object.keys(cmds)) samples[k].push(await cmds[k]())
      log(`rep ${i + 1}/${reps}: ${Object.keys(cmds).map((k) => `${k} ${(samples[k][i] * 1000).toFixed(0)} ms`).join(', ')}`)
    }
    const base = median(samples.node)
    const titles: Record<string, string> = {
      node: '`node -e 0` (Node\'s bare start)',
      help: '`replicafs --help`',
      status: '`replicafs status --state P`',
      json: '`replicafs status --json --state P`',
      sync: '`replicafs sync --state P`',
      ibc: '`replicafs sync && ibc-send APP` to a waiting `ibc receive` returning'
    }
    const rows = Object.keys(cmds).map((k) => `| ${titles[k]} | ${(median(samples[k]) * 1000).toFixed(0)} | ${(Math.min(...samples[k]) * 1000).toFixed(0)} | ${(median(samples[k]) / base).toFixed(2)}x |`)
    const section = `${CLI_HEADING}\n\nGenerated by \`node dist/bench/cli-startup.js --reps ${reps}\` (bench/cli-startup.ts) on ${new Date().toISOString().replace('T', ' ').slice(0, 19)} UTC, ` +
      `${os.cpus().length} CPUs, Node ${process.version}: medians of ${reps} runs, each command in turn, a Primary and a Secondary running on loopback. ` +
      'Each command loads only what it needs (src/cli/main.ts: a command\'s module is required when it runs; control-socket commands load no daemon, FUSE binding, LevelDB or codec). Aim: control-socket commands within 1.3x Node\'s bare start.\n\n' +
      '| command | median ms | min ms | / node -e 0 |\n|---|---|---|---|\n' + rows.join('\n') + '\n'
    process.stdout.write(section)
    const results = path.join(repo, 'bench', 'results')
    fs.mkdirSync(results, { recursive: true })
    fs.writeFileSync(path.join(results, 'cli-startup.md'), section)
    const doc = path.join(repo, 'docs', 'PERFORMANCE.md')
    fs.writeFileSync(doc, spliceNamed(fs.readFileSync(doc, 'utf8'), CLI_HEADING, section))
    log(`wrote ${path.relative(repo, doc)} ('${CLI_HEADING.slice(3)}') and bench/results/cli-startup.md`)
  } finally {
    for (const d of daemons.reverse()) await d.stop()
    fs.rmSync(work, { recursive: true, force: true })
  }
}

main().catch((err: Error) => { process.stderr.write(`cli-startup bench: ${err.message}\n`); process.exit(1) })
