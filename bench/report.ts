/**
 * Formatting and machine-description helpers shared by the benchmark reports
 * (run.ts: docs/PERFORMANCE.md; replication.ts and replication-doc.ts: its
 * "## Replication" section).
 */
import * as fs from 'fs'
import * as os from 'os'
import { execFileSync } from 'child_process'

const GiB = 1024 * 1024 * 1024

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

export function fmt(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return '—'
  if (x >= 1000) return Math.round(x).toLocaleString('en-US')
  if (x >= 100) return x.toFixed(0)
  if (x >= 10) return x.toFixed(1)
  return x.toFixed(2)
}

export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b
}

export function fmtRatio(x: number | undefined): string {
  return x === undefined ? '—' : `${x.toFixed(2)}x`
}

export function machineInfo(repo: string): Record<string, string> {
  const cpus = os.cpus()
  let gitRev = '?'
  try {
    gitRev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', cwd: repo }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin', 'bench'], { encoding: 'utf8', cwd: repo }).trim()
    if (dirty) gitRev += ' + uncommitted changes in src/, bin/ or bench/'
  } catch {
    /* not a git checkout */
  }
  let rootDev = '?'
  try {
    const line = fs.readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === '/tmp')
      ?? fs.readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === '/')
    if (line) {
      const [dev, mp, type, opts] = line.split(' ')
      rootDev = `${dev} on ${mp} (${type}, ${opts})`
    }
  } catch {
    /* ignore */
  }
  return {
    cpu: `${os.availableParallelism()} × ${cpus[0]?.model ?? '?'}`,
    memory: `${(os.totalmem() / GiB).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    'image backing fs': rootDev,
    commit: gitRev,
  }
}

export function table(headers: string[], rows: string[][], align: ('l' | 'r')[]): { text: string; md: string } {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const pad = (s: string, i: number): string => (align[i] === 'r' ? s.padStart(widths[i]) : s.padEnd(widths[i]))
  const text = [headers.map(pad).join('  '), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map((r) => r.map(pad).join('  '))].join('\n')
  const md = [
    `| ${headers.join(' | ')} |`,
    `| ${align.map((a) => (a === 'r' ? '---:' : ':---')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n')
  return { text, md }
}
