/**
 * `replicafs verify`: VVR's `vradmin verifydata`, online. Exit 0: identical; 1: differences found
 * (listed; with --repair, resent); 2: it could not run (or the repair did not finish).
 */
import cliProgress from 'cli-progress'
import { parse, required, helpText, type FlagSpec } from './args'
import { request, RemoteError } from '../control'
import { parseAddress, formatAddress } from '../rlink/common'
import { ReplError } from '../errors'
import type { Difference, VerifyProgress as Progress } from '../sync'
import type { VerifyAnswer as Answer } from '../daemon/verify'

export const VERIFY_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory of the Primary' },
  secondary: { type: 'string', arg: 'HOST:PORT', help: 'the Secondary to compare with (as given to primary --secondary; needed when there are several)' },
  repair: { type: 'boolean', help: 'resend what differs: the paths go to the RLINK\'s change map and the Secondary is\nresynchronized from it by difference (every chunk compared); waits until it is done' },
  json: { type: 'boolean', help: 'print the result as JSON (progress still goes to stderr)' },
  help: { type: 'boolean', help: 'show this help' }
}

const HELP = helpText('replicafs verify --state DIR [--secondary HOST:PORT] [--repair] [--json]',
  'Compares the Primary\'s tree with a Secondary\'s at one sequence number while replication goes\n' +
  'on: both sides take a copy-on-write snapshot after the same update, walk it, and hash every\n' +
  'file\'s chunks (XXH3-128); the Primary names every path that differs (and the byte ranges of\n' +
  'files whose bytes differ), including changes made behind replicafs\'s back in the Secondary\'s\n' +
  'data directory. atime and ctime are not compared.\n' +
  'Exit status: 0 identical, 1 differences found, 2 could not run (or the repair did not finish).', VERIFY_FLAGS)


const mib = (n: number): string => (n / (1024 * 1024)).toFixed(1)

/** What differs at one path, in one line. */
export function differenceLine (d: Difference): string {
  const parts: string[] = []
  for (const w of d.what) {
    if (w === 'missing') parts.push('missing on the Secondary')
    else if (w === 'extra') parts.push('only on the Secondary')
    else if (w === 'content' && d.ranges !== undefined) {
      const shown = d.ranges.slice(0, 8).map(([o, n]) => `${o}-${o + n - 1}`)
      parts.push(`content (bytes ${shown.join(', ')}${d.ranges.length > 8 ? `, and ${d.ranges.length - 8} more ranges` : ''})`)
    } else parts.push(w)
  }
  if (d.below !== undefined) parts.push(`with ${d.below} entries below it`)
  return `${d.p}: ${parts.join(', ')}`
}

export async function verifyCommand (argv: string[]): Promise<number> {
  let values: ReturnType<typeof parse>['values']
  let state: string
  let secondary: string | undefined
  try {
    values = parse('verify', argv, VERIFY_FLAGS).values
    if (values.help) { process.stdout.write(HELP); return 0 }
    state = required('verify', values, 'state')
    secondary = typeof values.secondary === 'string' ? formatAddress(parseAddress(values.secondary, 'secondary')) : undefined
  } catch (e) {
    // A verify that cannot start exits 2, as one that cannot finish.
    if (!(e instanceof ReplError)) throw e
    process.stderr.write(`${e.message.startsWith('replicafs') ? e.message : `replicafs: ${e.message}`}\n`)
    return 2
  }
  const err = process.stderr
  const bar = err.isTTY === true
    ? new cliProgress.SingleBar({ stream: err, hideCursor: true, clearOnComplete: true, format: 'verify {phase} [{bar}] {percentage}% | {done} of {all} MiB | {rate} MiB/s | ETA {left} | {differing} differ' }, cliProgress.Presets.shades_classic)
    : null
  let started = false
  let lastLine = 0
  const timer = setInterval(() => {
    request(state, { cmd: 'status' }).then((s) => {
      const p = ((s as { verify?: Progress[] }).verify ?? []).find((v) => secondary === undefined || v.secondary === secondary)
      if (p === undefined) return
      const total = p.totalBytes ?? 0
      const payload = { phase: p.phase, done: mib(p.bytes), all: p.totalBytes !== null ? mib(total) : '?', rate: mib(p.rateBytes), left: p.etaSeconds !== null ? `${Math.ceil(p.etaSeconds)} s` : '?', differing: p.differing }
      if (bar !== null) {
        if (!started) { bar.start(Math.max(1, total), Math.min(p.bytes, total), payload); started = true } else { bar.setTotal(Math.max(1, total)); bar.update(Math.min(p.bytes, Math.max(1, total)), payload) }
      } else if (Date.now() - lastLine >= 5000) {
        lastLine = Date.now()
        err.write(`verify ${p.id} of ${p.secondary}: ${p.phase}, ${p.entries} entries and ${mib(p.bytes)}${p.totalBytes !== null ? ` of ${mib(total)}` : ''} MiB compared (${mib(p.rateBytes)} MiB/s${p.etaSeconds !== null ? `, ETA ${Math.ceil(p.etaSeconds)} s` : ''}), ${p.differing} paths differ so far\n`)
      }
    }, () => {})
  }, 500)
  let a: Answer
  try {
    a = await request(state, { cmd: 'verify', secondary, repair: values.repair === true }) as Answer
  } catch (e) {
    if (!(e instanceof ReplError) && !(e instanceof RemoteError)) throw e
    err.write(`replicafs: verify could not run: ${e.message}\n`)
    return 2
  } finally {
    clearInterval(timer)
    bar?.stop()
  }
  if (values.json === true) {
    process.stdout.write(JSON.stringify(a, null, 2) + '\n')
  } else {
    const out = process.stdout
    const figures = `${a.entries.primary} entries, ${mib(a.bytes.primary)} MiB compared in ${a.seconds} s`
    if (a.identical) out.write(`identical: the Secondary ${a.secondary} and this Primary after sequence number ${a.seq} (${figures}; Merkle root ${a.root.primary.slice(0, 16)})\n`)
    else {
      out.write(`${a.differing} paths differ between this Primary and the Secondary ${a.secondary} after sequence number ${a.seq} (${figures}):\n`)
      for (const d of a.differences) out.write(`  ${differenceLine(d)}\n`)
      if (a.differing > a.differences.length) out.write(`  ... and ${a.differing - a.differences.length} more\n`)
    }
    if (a.repaired === true) out.write(`repaired: the Secondary ${a.secondary} was resynchronized from its change map (what differed was resent)\n`)
  }
  if (a.repaired === false) { err.write(`replicafs: the repair did not finish: ${a.repairError ?? 'unknown'}\n`); return 2 }
  return a.identical ? 0 : 1
}
