/**
 * `npm run bench:link [-- --mib N --rate RATE]`: compression and TLS on a link slower than the disks.
 *
 * The replication bench runs on loopback, where the RLINK is never the bottleneck, so it shows
 * only what TLS and zstd cost. Here a Primary/Secondary pair on this machine replicates over a
 * link that --bandwidth-limit makes a WAN (default 20M: 20 MiB/s), for two kinds of data written
 * through the Primary's mount: log text (compressible) and random bytes (not). For each of
 * plain, zstd, TLS and TLS+zstd it reports the time from the first write until the Secondary has
 * applied everything, the bytes on the wire, and both daemons' CPU seconds. Prints a Markdown
 * table (docs/PERFORMANCE.md "The RLINK on a limited link" keeps the latest).
 */
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import * as crypto from 'crypto'
import { startDaemon, type Daemon } from './daemon'
import { makeCerts, cpuSecondsOf } from './certs'
import { request } from '../src/control'

const MiB = 1024 * 1024

function arg (name: string, dflt: string): string {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : dflt
}

function logText (bytes: number): Buffer {
  const parts: string[] = []
  let n = 0
  for (let i = 0; n < bytes; i++) {
    const l = `2026-12-06T05:${String(i % 60).padStart(2, '0')}:${String((i * 7) % 60).padStart(2, '0')}Z web-${i % 13} GET /api/v1/items/${(i * 7919) % 100000} 200 ${(i * 31) % 5000}us ua="Mozilla/5.0"\n`
    parts.push(l)
    n += l.length
  }
  return Buffer.from(parts.join('')).subarray(0, bytes)
}

interface Row { data: string, mode: string, seconds: number, wire: number, cpuP: number, cpuS: number }

async function main (): Promise<void> {
  const mib = Number(arg('--mib', '128'))
  const rate = arg('--rate', '20M')
  const repo = path.resolve(__dirname, '..', '..')
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-bench-link-'))
  const log = (s: string): void => { process.stderr.write(s + '\n') }
  const secret = path.join(work, 'secret')
  fs.writeFileSync(secret, crypto.randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
  const tls = await makeCerts(path.join(work, 'pki'))
  const payload = { text: logText(mib * MiB), random: crypto.randomBytes(mib * MiB) }
  const rows: Row[] = []
  const daemons: Daemon[] = []
  try {
    for (const data of ['text', 'random'] as const) {
      for (const mode of ['plain', 'zstd', 'TLS', 'TLS+zstd']) {
        const dir = path.join(work, `${data}-${mode.replace('+', '-')}`)
        const S = { data: path.join(dir, 's', 'data'), mount: path.join(dir, 's', 'mnt'), state: path.join(dir, 's', 'state') }
        const P = { data: path.join(dir, 'p', 'data'), mount: path.join(dir, 'p', 'mnt'), state: path.join(dir, 'p', 'state') }
        const useTls = mode.startsWith('TLS')
        const sd = await startDaemon(repo, 'secondary', S, { srlSizeBytes: 2 * mib * MiB + 64 * MiB, extraArgs: ['--listen', '127.0.0.1:0', '--secret-file', secret, ...(useTls ? tls.secondary : [])], log })
        daemons.push(sd)
        const ss = await request(S.state, { cmd: 'status' }) as { listen: string, pid: number }
        const pd = await startDaemon(repo, 'primary', P, {
          srlSizeBytes: 2 * mib * MiB + 64 * MiB,
          extraArgs: ['--secondary', ss.listen, '--secret-file', secret, '--bandwidth-limit', rate, ...(useTls ? tls.primary : []), ...(mode.endsWith('zstd') ? ['--compress', 'zstd'] : [])],
          log
        })
        daemons.push(pd)
        const ps0 = await request(P.state, { cmd: 'status' }) as { pid: number, rlinks: Array<{ state: string }> }
        while ((await request(P.state, { cmd: 'status' }) as { rlinks: Array<{ state: string }> }).rlinks[0].state !== 'connected') await new Promise((resolve) => setTimeout(resolve, 50))
        const cpu0 = [cpuSecondsOf(ps0.pid), cpuSecondsOf(ss.pid)]
        const t0 = process.hrtime.bigint()
        fs.writeFileSync(path.join(P.mount, 'payload'), payload[data])
        let wire = 0
        for (;;) {
          const ps = await request(P.state, { cmd: 'status' }) as { srl: { newestSeq: number }, rlinks: Array<{ dataAckedSeq: number, transport: { bytesOut: number } | null }> }
          wire = ps.rlinks[0].transport?.bytesOut ?? wire
          if (ps.rlinks[0].dataAckedSeq >= ps.srl.newestSeq) break
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9
        rows.push({ data, mode, seconds, wire, cpuP: cpuSecondsOf(ps0.pid) - cpu0[0], cpuS: cpuSecondsOf(ss.pid) - cpu0[1] })
        log(`${data} ${mode}: ${seconds.toFixed(2)} s, ${(wire / MiB).toFixed(1)} MiB on the wire, CPU ${rows[rows.length - 1].cpuP.toFixed(1)} + ${rows[rows.length - 1].cpuS.toFixed(1)} s`)
        while (daemons.length > 0) await daemons.pop()!.stop()
      }
    }
  } finally {
    while (daemons.length > 0) await daemons.pop()!.stop().catch(() => {})
    fs.rmSync(work, { recursive: true, force: true })
  }
  const out = [`${mib} MiB written through the Primary's mount in one file, replicated over 127.0.0.1 with --bandwidth-limit ${rate}; time from the write until the Secondary applied it all.`, '',
    '| data | RLINK | time (s) | MiB/s end to end | MiB on the wire | CPU Primary + Secondary (s) |', '| :--- | :--- | ---: | ---: | ---: | ---: |']
  for (const r of rows) out.push(`| ${r.data === 'text' ? 'log text' : 'random'} | ${r.mode} | ${r.seconds.toFixed(2)} | ${(mib / r.seconds).toFixed(1)} | ${(r.wire / MiB).toFixed(1)} | ${r.cpuP.toFixed(1)} + ${r.cpuS.toFixed(1)} |`)
  process.stdout.write(out.join('\n') + '\n')
}

main().catch((err: Error) => { process.stderr.write(`bench:link: ${err.message}\n`); process.exit(1) })
