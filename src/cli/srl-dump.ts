/** `replicafs srl-dump`: prints the records retained in a stopped daemon's SRL (testing, debugging). */
import path from 'node:path'
import { parse, required, helpText, type FlagSpec } from './args'
import { Srl } from '../srl'
import { RecordType } from '../format/record'

export const DUMP_FLAGS: FlagSpec = {
  state: { type: 'string', arg: 'DIR', help: 'the state directory (its daemon must be stopped)' },
  json: { type: 'boolean', help: 'one JSON object per record' },
  help: { type: 'boolean', help: 'show this help' }
}
export const DUMP_HELP = helpText('replicafs srl-dump --state DIR [--json]', 'Prints every record retained in the SRL, oldest first. The daemon must be stopped\n(the state directory is locked while it runs).', DUMP_FLAGS)

export async function dumpCommand (argv: string[]): Promise<number> {
  const { values } = parse('srl-dump', argv, DUMP_FLAGS)
  if (values.help) { process.stdout.write(DUMP_HELP); return 0 }
  const srl = await Srl.open(path.join(required('srl-dump', values, 'state'), 'srl'), { ringBytes: 0, role: 'any' })
  try {
    for (const { record: r, offset } of srl.records()) {
      const m = r.meta
      const row: Record<string, unknown> = { seq: r.seq, type: RecordType[r.type], ringOffset: offset }
      if (m.p !== undefined) row.path = m.p
      if (m.d !== undefined) row.dest = m.d
      if (m.o !== undefined) row.offset = m.o
      if (m.l !== undefined) row.length = m.l
      if (r.type === RecordType.WRITE) row.length = r.data.length
      if (m.s !== undefined) row.size = m.s
      if (m.m !== undefined) row.mode = m.m
      if (m.n !== undefined) row.name = m.n
      // Times as [seconds, nanoseconds], or null for "left as is". `t` is the time the record
      // results in (mtime; also atime of a new entry); `a` is UTIMENS's atime.
      if (m.a !== undefined) row.a = m.a
      if (m.t !== undefined) row.t = m.t
      if (m.v !== undefined) { row.voids = m.v; row.errno = m.e }
      process.stdout.write(values.json ? JSON.stringify(row) + '\n' : Object.entries(row).map(([k, v]) => `${k}=${String(v)}`).join(' ') + '\n')
    }
  } finally {
    await srl.close()
  }
  return 0
}
