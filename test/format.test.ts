/**
 * SRL format (docs/FORMAT.md): the record bytes stored in test/fixtures/abi/<version>/ must keep
 * decoding to the same metadata (versions 1 and 2), and today's encoder must keep producing the
 * current version's bytes exactly (version 2) and version 1's metadata bytes exactly; the ring's
 * layout and recovery rules (WRAP markers, 8-byte alignment, torn tail vs corruption) hold on a real
 * file. No FUSE, no daemon: these run anywhere.
 */
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  encodeRecord, decodeRecord, readHeader, checksumOk, RecordType, RECORD_MAGIC, RECORD_FORMAT_VERSION, RECORD_FORMAT_VERSIONS_READ,
  type RecordMeta
} from '../src/format/record'
import { Ring, alignUp } from '../src/srl/ring'
import { Srl } from '../src/srl'
import { LogStore, STATE_FORMAT_VERSION } from '../src/srl/state'
import type { Key } from '../src/format/state'
import { isReplError } from '../src/errors'
import { RECORD_HEADER_BYTES, SRL_BYTES_MIN } from '../src/limits'
import { metaFromJson, buildFixture, addNewTypes, type Fixture } from './fixtures/abi/generate'

/** A LevelDB key spelled as docs/FORMAT.md spells it: these tests check the on-disk layout itself. */
function raw<T = unknown> (name: string): Key<T> { return { name } }

// Compiled to dist/test; the fixture is read from the source tree.
const FIXTURE_DIR = path.resolve(__dirname, '..', '..', 'test', 'fixtures', 'abi')
const RING_BYTES = SRL_BYTES_MIN // 4 MiB, the smallest ring Ring/Srl accept

const tmpDirs: string[] = []
function tmpDir (): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replicafs-format-'))
  tmpDirs.push(dir)
  return dir
}
test.after(() => {
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true })
})

function loadFixture (version: number): Fixture {
  return JSON.parse(fs.readFileSync(path.join(FIXTURE_DIR, String(version), 'records.json'), 'utf8')) as Fixture
}

/** Metadata in a comparable shape (Buffers and Uint8Arrays as plain byte arrays). */
function comparable (meta: RecordMeta): unknown {
  const out: { [k: string]: unknown } = {}
  for (const [k, v] of Object.entries(meta)) out[k] = v instanceof Uint8Array ? { bytes: [...v] } : v
  return out
}

function throwsCode (fn: () => unknown, code: string, match?: RegExp): void {
  try {
    fn()
  } catch (err) {
    assert.ok(isReplError(err), `expected a ReplError, got ${String(err)}`)
    assert.is((err as { code: string }).code, code)
    if (match) assert.match((err as Error).message, match)
    return
  }
  assert.unreachable(`expected ${code}`)
}

async function rejectsCode (p: Promise<unknown>, code: string, match?: RegExp): Promise<void> {
  try {
    await p
  } catch (err) {
    assert.ok(isReplError(err), `expected a ReplError, got ${String(err)}`)
    assert.is((err as { code: string }).code, code, (err as Error).message)
    if (match) assert.match((err as Error).message, match)
    return
  }
  assert.unreachable(`expected ${code}`)
}

// ---------------------------------------------------------------------------------------------
// ABI fixtures: versions 1 and 2 (still read) and version 3 (read and written)

/** The namespace types and FALLOCATE: version 2 gave them `t`, the time they result in. */
const TIMED_IN_V2 = new Set<number>([
  RecordType.CREATE, RecordType.MKDIR, RecordType.MKNOD, RecordType.SYMLINK, RecordType.LINK,
  RecordType.UNLINK, RecordType.RMDIR, RecordType.RENAME, RecordType.FALLOCATE
])

/**
 * The record types each version's fixture must hold: the types that existed when that version was
 * current. A new record type needs no version bump (docs/FORMAT.md, "Version-bump rules"), so it is
 * added to the current version's fixture only: IBC (19) came in version 2. Old fixtures never change.
 */
const V1_TYPES = Array.from({ length: 18 }, (_, i) => i + 1) // WRITE (1) .. VOID (18)
function allTypes (): number[] {
  return Object.values(RecordType).filter((v): v is number => typeof v === 'number').sort((a, b) => a - b)
}
const V2_TYPES = Array.from({ length: 19 }, (_, i) => i + 1) // WRITE (1) .. IBC (19)
const TYPES_OF_VERSION = new Map<number, number[]>([[1, V1_TYPES], [2, V2_TYPES], [3, allTypes()]])

const fixtures = new Map<number, Fixture>([1, 2, 3].map((v) => [v, loadFixture(v)]))
const fixture = fixtures.get(1)!

test('fixtures: this build writes version 3 and has a fixture for every version it reads', () => {
  assert.is(RECORD_FORMAT_VERSION, 3, 'a new format version needs a new fixture directory and an UPGRADING.md entry')
  assert.equal(RECORD_FORMAT_VERSIONS_READ, [1, 2, 3])
  for (const v of RECORD_FORMAT_VERSIONS_READ) assert.ok(fs.existsSync(path.join(FIXTURE_DIR, String(v), 'records.json')), `fixture for version ${v}`)
})

test('fixture v2: namespace records and FALLOCATE carry t; version 1 ones do not', () => {
  for (const [v, f] of fixtures) {
    for (const r of f.records.filter((r) => TIMED_IN_V2.has(r.type))) {
      const t = r.meta.t as [number, number] | undefined
      if (v === 1) {
        assert.is(t, undefined, `v1 ${r.name} has no t`)
      } else {
        assert.ok(Array.isArray(t) && t.length === 2 && Number.isInteger(t[0]) && Number.isInteger(t[1]) && t[1] >= 0 && t[1] < 1e9, `v2 ${r.name} carries a Timespec t`)
      }
    }
  }
})

for (const [version, f] of fixtures) {
  const current = version === RECORD_FORMAT_VERSION

  test(`fixture v${version}: version ${version}, one record for every record type of version ${version}`, () => {
    assert.is(f.formatVersion, version)
    const types = TYPES_OF_VERSION.get(version)
    assert.ok(types !== undefined, `the test knows which record types version ${version} has`)
    assert.equal(f.records.map((r) => r.type).sort((a, b) => a - b), types, `every record type of version ${version} has exactly one fixture record`)
    for (const r of f.records) assert.is(RecordType[r.type], r.name, `type number ${r.type} still means ${r.name}`)
  })

  for (const r of f.records) {
    test(`fixture v${version}: ${r.name} decodes to the stored metadata and re-encodes ${current ? 'byte for byte' : 'to the same metadata bytes'}`, () => {
      const bytes = Buffer.from(r.bytes, 'hex')
      const data = Buffer.from(r.data, 'hex')
      const meta = metaFromJson(r.meta)

      // Header fields at their documented offsets, little-endian.
      assert.is(bytes.readUInt32LE(0), RECORD_MAGIC)
      assert.is(bytes.subarray(0, 4).toString('latin1'), 'RSRL')
      assert.is(bytes.readUInt16LE(4), version)
      assert.is(bytes.readUInt16LE(6), r.type)
      assert.is(bytes.readBigUInt64LE(8), BigInt(r.seq))
      assert.is(bytes.readUInt32LE(20), data.length)
      assert.is(bytes.readUInt32LE(28), 0, 'reserved bytes are zero')
      const h = readHeader(bytes)
      assert.ok(h !== null)
      assert.equal({ version: h.version, type: h.type, seq: h.seq, dataLength: h.dataLength, totalLength: h.totalLength },
        { version, type: r.type, seq: r.seq, dataLength: data.length, totalLength: bytes.length })
      assert.is(RECORD_HEADER_BYTES + h.metaLength + h.dataLength, bytes.length)
      assert.ok(checksumOk(bytes), 'stored bytes pass their CRC-32C')

      if (r.type === RecordType.WRAP) {
        // A WRAP marker has no metadata at all: it is a bare header, never decoded.
        assert.is(h.metaLength, 0)
        assert.is(bytes.length, RECORD_HEADER_BYTES)
      } else {
        const rec = decodeRecord(bytes)
        assert.is(rec.type, r.type)
        assert.is(rec.seq, r.seq)
        assert.equal(comparable(rec.meta), comparable(meta), 'decoded metadata equals the stored metadata')
        assert.ok(rec.data.equals(data), 'decoded data equals the stored data')
      }

      // The encoder must still produce exactly these bytes (catches a msgpackr default change).
      const again = encodeRecord(r.type, r.seq, meta, r.type === RecordType.WRITE ? data : undefined)
      if (current) {
        assert.is(again.toString('hex'), r.bytes, 'encodeRecord of the stored metadata is byte-identical')
      } else {
        // An old version: today's encoder writes the current version (and so another CRC), but
        // every other byte, the metadata's above all, must be the old record's.
        assert.is(again.length, bytes.length)
        assert.is(again.readUInt16LE(4), RECORD_FORMAT_VERSION)
        assert.ok(checksumOk(again))
        assert.is(again.subarray(6, 24).toString('hex'), bytes.subarray(6, 24).toString('hex'), 'header bytes 6..24 are the same')
        assert.is(again.subarray(28).toString('hex'), bytes.subarray(28).toString('hex'), 'reserved bytes, metadata and data are the same')
      }
    })

    test(`fixture v${version}: ${r.name}: CRC-32C covers bytes 0..24 and everything after the header`, () => {
      const bytes = Buffer.from(r.bytes, 'hex')
      for (let i = 0; i < bytes.length; i++) {
        const damaged = Buffer.from(bytes)
        damaged[i] ^= 0x01
        if (i >= 28 && i < 32) assert.ok(checksumOk(damaged), `byte ${i} is reserved and outside the CRC`)
        else assert.not.ok(checksumOk(damaged), `flipping byte ${i} fails the checksum`)
      }
    })
  }
}

test('fixtures: the current version\'s fixture covers every RecordType; version 1 had types 1..18 only', () => {
  assert.equal(TYPES_OF_VERSION.get(RECORD_FORMAT_VERSION), allTypes(), 'the current version covers every type')
  assert.ok(allTypes().includes(RecordType.IBC), 'IBC is a record type')
  assert.is(RecordType.IBC, 19, 'IBC is type 19 (a number is never reused)')
  assert.not.ok(V1_TYPES.includes(RecordType.IBC), 'IBC is not a version-1 type')
  assert.equal(V1_TYPES, allTypes().filter((t) => t <= RecordType.VOID), 'version 1: WRITE .. VOID')
})

test('generate.ts: it reproduces the current version\'s fixture, and --add-new-types only appends', () => {
  const stored = fixtures.get(RECORD_FORMAT_VERSION)!
  assert.equal(buildFixture().records, stored.records, 'the generator\'s cases are the stored records (bytes included)')
  const { fixture: same, added } = addNewTypes(stored)
  assert.equal(added, [], 'the stored fixture lacks no type')
  assert.equal(same.records, stored.records)
  // a fixture written before IBC existed gains exactly the IBC record, the others untouched
  const older: Fixture = { ...stored, records: stored.records.filter((r) => r.type !== RecordType.IBC) }
  const { fixture: grown, added: grownBy } = addNewTypes(older)
  assert.equal(grownBy, ['IBC'])
  assert.equal(grown.records.slice(0, older.records.length), older.records, 'existing records are kept as they are')
  assert.equal(grown.records[grown.records.length - 1], stored.records.find((r) => r.type === RecordType.IBC))
})

test('fixture v2: the IBC record carries n, x (bytes), f, s, t, in that order', () => {
  const r = fixtures.get(2)!.records.find((x) => x.type === RecordType.IBC)
  assert.ok(r !== undefined, 'the v2 fixture has an IBC record')
  assert.is(r.name, 'IBC')
  assert.is(r.data, '', 'an IBC record has no data payload (the message is in the metadata)')
  const rec = decodeRecord(Buffer.from(r.bytes, 'hex'))
  assert.equal(Object.keys(rec.meta), ['n', 'x', 'f', 's', 't'], 'the keys src/ibc/primary.ts writes, in its order')
  assert.is(typeof rec.meta.n, 'string')
  assert.instance(rec.meta.x, Uint8Array, 'the message is msgpack bin, decoded as bytes')
  assert.ok(Buffer.from(rec.meta.x as Uint8Array).includes(0xff), 'the fixture message has a byte that is not UTF-8')
  assert.ok(Number.isInteger(rec.meta.f) && Number.isInteger(rec.meta.s), 'f and s are integers')
  const t = rec.meta.t as [number, number]
  assert.ok(Array.isArray(t) && t.length === 2, 't is a Timespec')
  // The bin marker (0xc4, length) is in the bytes: a str encoding of x would be another record.
  assert.ok(Buffer.from(r.bytes, 'hex').includes(Buffer.from([0xa1, 0x78, 0xc4, (rec.meta.x as Uint8Array).length])), 'x is encoded as bin 8')
})

test('fixtures: a v1 record and its v2 successor differ only in the version, t and the checksum', () => {
  const v1 = fixtures.get(1)!.records
  const v2 = fixtures.get(2)!.records
  let compared = 0
  for (const r2 of v2) {
    const r1 = v1.find((r) => r.type === r2.type)
    if (r1 === undefined) {
      // A type added after version 1 (without a version bump) has no version-1 counterpart.
      assert.not.ok(V1_TYPES.includes(r2.type), `${r2.name} is a version-1 type but the v1 fixture lacks it`)
      continue
    }
    compared++
    // The version-1 fixture had no owner on new entries yet; compare what both versions carry.
    const m1 = metaFromJson(r1.meta)
    const m2 = metaFromJson(r2.meta)
    for (const k of Object.keys(m1)) assert.equal(comparable({ [k]: m2[k as keyof RecordMeta] }), comparable({ [k]: m1[k as keyof RecordMeta] }), `${r2.name}.${k}`)
    const extra = Object.keys(m2).filter((k) => !(k in m1)).sort()
    const allowed = TIMED_IN_V2.has(r2.type) ? ['g', 't', 'u'] : []
    for (const k of extra) assert.ok(allowed.includes(k), `${r2.name}: v2 adds only t (and the owner): ${k}`)
    if (TIMED_IN_V2.has(r2.type)) assert.ok(extra.includes('t'), `${r2.name}: v2 adds t`)
  }
  assert.is(compared, V1_TYPES.length, 'every version-1 type was compared')
})

test('readHeader: a format version other than 1, 2 or 3 throws FORMAT_VERSION', () => {
  const bytes = Buffer.from(fixture.records[0].bytes, 'hex')
  for (const v of [1, 2, 3]) {
    const ok = Buffer.from(bytes)
    ok.writeUInt16LE(v, 4)
    assert.is(readHeader(ok)?.version, v, `version ${v} is read`)
  }
  const v4 = Buffer.from(bytes)
  v4.writeUInt16LE(4, 4)
  throwsCode(() => readHeader(v4), 'FORMAT_VERSION', /version 4 .*versions 1, 2, 3.*newer replicafs/)
  const v0 = Buffer.from(bytes)
  v0.writeUInt16LE(0, 4)
  throwsCode(() => readHeader(v0), 'FORMAT_VERSION')
})

test('readHeader: zero-fill, wrong magic, short buffers and impossible lengths are not records', () => {
  const bytes = Buffer.from(fixture.records[0].bytes, 'hex')
  assert.is(readHeader(Buffer.alloc(RECORD_HEADER_BYTES)), null)
  assert.is(readHeader(bytes.subarray(0, RECORD_HEADER_BYTES - 1)), null)
  const magic = Buffer.from(bytes); magic[0] ^= 0xff
  assert.is(readHeader(magic), null)
  const meta = Buffer.from(bytes); meta.writeUInt32LE(0xffffffff, 16)
  assert.is(readHeader(meta), null)
  const data = Buffer.from(bytes); data.writeUInt32LE(128 * 1024 + 1, 20)
  assert.is(readHeader(data), null, 'version 1: at most 128 KiB of data')
})

test('readHeader: version 3 allows a WRITE of up to 1 MiB; versions 1 and 2 up to 128 KiB', () => {
  const bytes = Buffer.from(fixture.records[0].bytes, 'hex')
  const at = (version: number, dataLength: number): number | undefined => {
    const b = Buffer.from(bytes)
    b.writeUInt16LE(version, 4)
    b.writeUInt32LE(dataLength, 20)
    return readHeader(b)?.dataLength
  }
  for (const v of [1, 2]) {
    assert.is(at(v, 128 * 1024), 128 * 1024, `version ${v}: 128 KiB`)
    assert.is(at(v, 128 * 1024 + 1), undefined, `version ${v}: one byte more is not a record`)
  }
  assert.is(at(3, 128 * 1024 + 1), 128 * 1024 + 1)
  assert.is(at(3, 1024 * 1024), 1024 * 1024, 'version 3: 1 MiB')
  assert.is(at(3, 1024 * 1024 + 1), undefined, 'version 3: one byte more is not a record')
  // A maximal write round-trips through the encoder (which writes version 3).
  const big = Buffer.alloc(1024 * 1024, 0xa5)
  const rec = encodeRecord(RecordType.WRITE, 9, { p: '/big', o: 0, t: [1, 2] }, big)
  assert.is(readHeader(rec)?.version, 3)
  assert.ok(checksumOk(rec))
  assert.ok(decodeRecord(rec).data.equals(big))
  assert.throws(() => encodeRecord(RecordType.WRITE, 9, { p: '/big', o: 0, t: [1, 2] }, Buffer.alloc(1024 * 1024 + 1)), 'more than 1 MiB is a bug')
})

test('encodeRecord: records are a header plus metadata plus data, unpadded; the ring aligns them', () => {
  const buf = encodeRecord(RecordType.WRITE, 7, { p: '/a', o: 0, t: [1, 2] }, Buffer.from('xyz'))
  const h = readHeader(buf)!
  assert.is(buf.length, RECORD_HEADER_BYTES + h.metaLength + 3)
  // FORMAT.md: records start at multiples of 8 bytes (the ring test below checks where they land).
  assert.equal([0, 1, 7, 8, 9, 15, 16, 17].map(alignUp), [0, 8, 8, 8, 16, 16, 16, 24])
})

// ---------------------------------------------------------------------------------------------
// The ring

interface Written { seq: number, start: number, end: number, buf: Buffer, data: Buffer }

/** Appends like Srl.append does: returns where each record went. */
function appendAll (ring: Ring, head: number, firstSeq: number, sizes: number[]): { written: Written[], head: number } {
  const written: Written[] = []
  let seq = firstSeq
  for (const size of sizes) {
    const data = Buffer.alloc(size, seq & 0xff)
    const buf = encodeRecord(RecordType.WRITE, seq, { p: `/f${seq}`, o: seq * 4096, t: [1700000000, seq] }, data)
    const { start, end } = ring.write(head, seq, buf)
    written.push({ seq, start, end, buf, data })
    head = end
    seq++
  }
  return { written, head }
}

function readAll (ring: Ring, from: number, written: Written[]): void {
  let off = from
  for (const w of written) {
    const r = ring.readAt(off, w.seq)
    assert.ok(r !== null, `record ${w.seq} is readable at ${off}`)
    assert.is(r.record.seq, w.seq)
    assert.is(r.offset, w.start, `record ${w.seq} starts where it was written`)
    assert.is(r.end, w.end)
    assert.is(r.offset % 8, 0, 'records start 8-byte aligned (FORMAT.md)')
    assert.ok(r.record.data.equals(w.data), `record ${w.seq}'s data`)
    off = r.end
  }
}

/** Physical bytes of the record's region [start, start + length). */
function corrupt (ring: Ring, linear: number, length: number, fn: (b: Buffer) => void): void {
  const phys = linear % ring.size
  const b = Buffer.alloc(length)
  fs.readSync(ring.fd, b, 0, length, phys)
  fn(b)
  fs.writeSync(ring.fd, b, 0, length, phys)
}

function openRing (): Ring {
  return Ring.open(path.join(tmpDir(), 'ring'), RING_BYTES)
}

test('ring: created zero-filled at its full size', () => {
  const dir = tmpDir()
  const ring = Ring.open(path.join(dir, 'ring'), RING_BYTES)
  try {
    assert.is(fs.statSync(path.join(dir, 'ring')).size, RING_BYTES)
    assert.ok(ring.read(0, 64 * 1024).equals(Buffer.alloc(64 * 1024)))
    assert.is(ring.readAt(0, 1), null, 'an empty ring is an empty log')
  } finally {
    ring.close()
  }
  throwsCode(() => Ring.open(path.join(dir, 'ring'), 2 * RING_BYTES), 'FORMAT_VERSION', /bytes/)
})

test('ring: records wrap the lap behind a WRAP marker and read back in order', () => {
  const ring = openRing()
  try {
    // Start 200 KiB before the end of the file, as if everything before had been released.
    const first = ring.size - 200 * 1024
    const { written, head } = appendAll(ring, first, 1000, [60000, 60001, 60002, 60003, 60004, 5])
    const wrapped = written.find((w) => w.start % ring.size < first % ring.size)!
    assert.ok(wrapped !== undefined, 'some record went to the next lap')
    assert.is(wrapped.start % ring.size, 0, 'the wrapped record starts the next lap')
    assert.is(wrapped.start, ring.size, 'linear offsets keep growing across the lap')
    const before = written[written.indexOf(wrapped) - 1]
    const left = ring.size - (before.end % ring.size)
    assert.ok(left >= RECORD_HEADER_BYTES, `${left} bytes were left`)
    const marker = readHeader(ring.read(before.end, RECORD_HEADER_BYTES))
    assert.ok(marker !== null)
    assert.is(marker.type, RecordType.WRAP)
    assert.is(marker.seq, wrapped.seq, 'the WRAP marker carries the next record\'s sequence number')
    assert.ok(checksumOk(ring.read(before.end, RECORD_HEADER_BYTES)))
    for (const w of written) assert.ok(w.start % ring.size + w.buf.length <= ring.size, 'no record straddles the end')
    readAll(ring, first, written)
    assert.is(ring.readAt(head, 1000 + written.length), null, 'zero-fill after the last record ends the log')
  } finally {
    ring.close()
  }
})

test('ring: fewer than 32 bytes before the end get no marker; an exact fit does not wrap', () => {
  const ring = openRing()
  try {
    const head = ring.size - 24
    const { written } = appendAll(ring, head, 1, [100])
    assert.is(written[0].start, ring.size)
    assert.ok(ring.read(head, 24).equals(Buffer.alloc(24)), 'nothing is written in the last 24 bytes')
    readAll(ring, head, written)

    const buf = encodeRecord(RecordType.WRITE, 2, { p: '/x', o: 0, t: [1, 1] }, Buffer.alloc(1000))
    const at = 2 * ring.size - alignUp(buf.length)
    const placed = ring.place(at, buf.length)
    assert.is(placed.start, at)
    assert.is(placed.end, 2 * ring.size)
  } finally {
    ring.close()
  }
})

test('ring: a torn last record reads as the end of the log, even with an older lap behind it', () => {
  const ring = openRing()
  try {
    // Lap 1 fills the file with records of lower sequence numbers; lap 2 then overwrites its start.
    const lap1 = appendAll(ring, 0, 1, Array.from({ length: 65 }, () => 60000))
    assert.ok(lap1.head < ring.size, 'lap 1 did not wrap')
    const first = lap1.head
    const lap2 = appendAll(ring, first, 66, Array.from({ length: 12 }, () => 60000))
    const last = lap2.written[lap2.written.length - 1]
    assert.ok(last.start >= ring.size, 'the last record is in lap 2')
    const stale = readHeader(ring.read(last.end, RECORD_HEADER_BYTES))
    assert.ok(stale !== null && stale.seq < last.seq, 'a lap-1 record with a lower sequence number follows it')
    const half = Math.floor(last.buf.length / 2)
    corrupt(ring, last.start + half, last.buf.length - half, (b) => b.fill(0))
    readAll(ring, first, lap2.written.slice(0, -1))
    assert.is(ring.readAt(last.start, last.seq), null, 'a torn tail is the end of the log, not corruption')
  } finally {
    ring.close()
  }
})

test('ring: a damaged record with later records is LOG_CORRUPT naming its sequence number', () => {
  const ring = openRing()
  try {
    const { written } = appendAll(ring, 4096, 500, [1000, 2000, 3000, 4000, 5000])
    const mid = written[2]
    corrupt(ring, mid.start + mid.buf.length - 10, 1, (b) => { b[0] ^= 0xff })
    readAll(ring, 4096, written.slice(0, 2))
    throwsCode(() => ring.readAt(mid.start, mid.seq), 'LOG_CORRUPT', new RegExp(`sequence number ${mid.seq}\\b`))
    assert.ok(ring.laterRecordExists(mid.end, mid.seq))
    assert.not.ok(ring.laterRecordExists(written[4].end, written[4].seq), 'nothing after the last record')
  } finally {
    ring.close()
  }
})

// ---------------------------------------------------------------------------------------------
// SRL recovery (state in LevelDB, bytes in the ring)

async function srlWith (n: number): Promise<{ dir: string, ends: number[] }> {
  const dir = path.join(tmpDir(), 'srl')
  const srl = await Srl.open(dir, { ringBytes: RING_BYTES, role: 'primary' })
  const ends: number[] = []
  try {
    for (let i = 1; i <= n; i++) ends.push(srl.append(RecordType.WRITE, { p: '/f', o: i * 100, t: [1, i] }, Buffer.alloc(100 * i, i)).end)
  } finally {
    await srl.close()
  }
  return { dir, ends }
}

test('srl: after a kill -9, replay starts at the last record that is not a WRITE', async () => {
  const { dir } = await srlWith(3) // WRITE 1..3
  let srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
  try {
    assert.equal(srl.checkpoint, { seq: 0, offset: 0 }, 'only writes: replay everything retained')
    assert.equal(srl.pending.map((r) => r.record.seq), [1, 2, 3])
    srl.append(RecordType.RENAME, { p: '/f', d: '/g' })        // 4: appended only once 1..3 were applied
    srl.append(RecordType.WRITE, { p: '/g', o: 0, t: [1, 5] }, Buffer.from('five')) // 5
    srl.append(RecordType.WRITE, { p: '/h', o: 0, t: [1, 6] }, Buffer.from('six'))  // 6
  } finally {
    await srl.close()
  }
  srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
  try {
    assert.equal(srl.pending.map((r) => r.record.seq), [4, 5, 6], 'same boot: from the last non-WRITE record on')
    assert.is(srl.checkpoint.seq, 3)
    assert.is(srl.checkpoint.offset, srl.pending[0].offset)
  } finally {
    await srl.close()
  }
})

test('srl: after a reboot (another boot id), replay starts at the durable position', async () => {
  const { dir, ends } = await srlWith(4)
  let srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
  try {
    srl.append(RecordType.CHMOD, { p: '/f', m: 0o600 }) // 5
  } finally {
    await srl.close()
  }
  const store = await LogStore.open(path.join(dir, 'state'))
  await store.put(raw<string>('boot'), 'another-boot')
  await store.put(raw<{ seq: number, offset: number }>('durable'), { seq: 1, offset: ends[0] })
  await store.close()
  // A start after the reboot that dies before its replay completes must not count as this boot.
  for (const attempt of ['first start, no replay', 'second start']) {
    srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
    try {
      assert.equal(srl.checkpoint, { seq: 1, offset: ends[0] }, attempt)
      assert.equal(srl.pending.map((r) => r.record.seq), [2, 3, 4, 5], attempt)
      if (attempt === 'second start') await srl.recordBoot()
    } finally {
      await srl.close()
    }
  }
  const again = await LogStore.open(path.join(dir, 'state'))
  try {
    assert.is(await again.get(raw<string>('boot')), fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), 'recordBoot records this boot')
  } finally {
    await again.close()
  }
  srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
  try {
    assert.equal(srl.pending.map((r) => r.record.seq), [5], 'after recordBoot: the same boot again')
  } finally {
    await srl.close()
  }
})

test('srl: after a reboot, unsynced records past a lost one are discarded and erased', async () => {
  const { dir, ends } = await srlWith(5)
  const ringFile = path.join(dir, 'ring')
  // Record 3 never reached the disk; 4 and 5 did (write-back order is not append order).
  const fd = fs.openSync(ringFile, 'r+')
  try {
    fs.writeSync(fd, Buffer.alloc(ends[2] - ends[1]), 0, ends[2] - ends[1], ends[1])
  } finally {
    fs.closeSync(fd)
  }
  const store = await LogStore.open(path.join(dir, 'state'))
  await store.put(raw<string>('boot'), 'another-boot')
  await store.close()
  const srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
  try {
    assert.is(srl.lastSeq, 2, 'the log ends before the lost record')
    assert.ok(srl.warnings.some((w) => /discarded and erased/.test(w)), 'the daemon is told')
    assert.not.ok(srl.ring.laterRecordExists(ends[1], 2), 'records 4 and 5 are gone from the ring')
  } finally {
    await srl.close()
  }
})

test('srl: a torn tail is cut; a damaged header with later records is LOG_CORRUPT', async () => {
  const { dir, ends } = await srlWith(5)
  const ringFile = path.join(dir, 'ring')
  const fd = fs.openSync(ringFile, 'r+')
  try {
    // Zero the last record's second half: a torn tail.
    const start5 = ends[3]
    const len5 = ends[4] - start5
    fs.writeSync(fd, Buffer.alloc(len5 - 64), 0, len5 - 64, start5 + 64)
  } finally {
    fs.closeSync(fd)
  }
  let srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
  try {
    assert.is(srl.lastSeq, 4, 'record 5 was cut')
  } finally {
    await srl.close()
  }
  // Zero record 2's header: the scan stops there, and the forward search finds records 3 and 4.
  const fd2 = fs.openSync(ringFile, 'r+')
  try {
    fs.writeSync(fd2, Buffer.alloc(RECORD_HEADER_BYTES), 0, RECORD_HEADER_BYTES, ends[0])
  } finally {
    fs.closeSync(fd2)
  }
  await rejectsCode(Srl.open(dir, { ringBytes: 0, role: 'any' }), 'LOG_CORRUPT', /sequence number 2\b/)
})

test('srl: a clean stop spares the next open the search of the whole ring; a kill -9, or a stop whose end is not the log\'s, does not', async () => {
  const { dir, ends } = await srlWith(3) // closed cleanly: `clean` says where the log ended
  const search = Ring.prototype.laterRecordExists
  let searches = 0
  Ring.prototype.laterRecordExists = function (this: Ring, from: number, seq: number): boolean { searches++; return search.call(this, from, seq) }
  try {
    const before = await LogStore.open(path.join(dir, 'state'))
    assert.equal(await before.get(raw<{ seq: number, offset: number }>('clean')), { seq: 3, offset: ends[2] }, 'written at the clean stop')
    await before.close()
    let srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
    assert.is(searches, 0, 'after a clean stop: no search')
    assert.is(await srl.store.get(raw('clean')), undefined, 'deleted by the open, before anything is appended')
    srl.append(RecordType.WRITE, { p: '/f', o: 0, t: [1, 4] }, Buffer.from('four'))
    // A kill -9: the process ends without close().
    srl.ring.close()
    await srl.store.close()
    srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
    assert.is(searches, 1, 'after a kill -9: the search')
    assert.is(srl.lastSeq, 4)
    await srl.close()
    // A `clean` that is not where the scan ends (another process appended since): the search.
    const store = await LogStore.open(path.join(dir, 'state'))
    await store.put(raw<{ seq: number, offset: number }>('clean'), { seq: 3, offset: ends[2] })
    await store.close()
    srl = await Srl.open(dir, { ringBytes: 0, role: 'any' })
    assert.is(searches, 2, 'a stale clean mark: the search')
    await srl.close()
  } finally {
    Ring.prototype.laterRecordExists = search
  }
})

test('srl: LevelDB state keys and JSON values', async () => {
  const { dir } = await srlWith(1)
  const store = await LogStore.open(path.join(dir, 'state'))
  try {
    const format = await store.get(raw<{ version: number, ringBytes: number, role: string, createdAt: string }>('format'))
    assert.ok(format !== undefined)
    assert.equal({ version: format.version, ringBytes: format.ringBytes, role: format.role }, { version: STATE_FORMAT_VERSION, ringBytes: RING_BYTES, role: 'primary' })
    assert.ok(!Number.isNaN(Date.parse(format.createdAt)))
    assert.equal(await store.get(raw('durable')), { seq: 0, offset: 0 })
  } finally {
    await store.close()
  }
})

test.run()
