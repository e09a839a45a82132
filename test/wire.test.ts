/**
 * Unit tests of the RLINK wire codec (src/format/wire.ts): frames, the stream decoder, the
 * challenge-response proofs. No daemons, no mounts.
 */
import { suite } from 'uvu'
import crypto from 'node:crypto'
import * as assert from 'uvu/assert'
import {
  encodeFrame, encodeFrameParts, FrameDecoder, MsgType, PROTOCOL_VERSION, proof, proofOk, nonce, type Message
} from '../src/format/wire'
import { isReplError } from '../src/errors'
import { WIRE_FRAME_BYTES_MAX } from '../src/limits'
import { timed } from './helpers/util'

const t = suite('wire')

const bytes = (n: number, seed: number): Buffer => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (seed + i * 31) & 0xff
  return b
}

/** One message of every type, with fields of every kind the protocol uses (binary, null, large integers). */
function samples (): Message[] {
  return [
    { t: MsgType.HELLO, v: PROTOCOL_VERSION, rds: 'rds-ünïcode', srlId: '0123456789abcdef', nonce: bytes(32, 1), rf: 3, gen: { id: '9f1c2e4a-0000-4000-8000-00000000abcd', since: 2 ** 40, history: [{ id: 'ab', end: 7 }] } },
    { t: MsgType.CHALLENGE, v: PROTOCOL_VERSION, rds: 'replicafs', nonce: bytes(32, 2), proof: bytes(32, 3), next: 2 ** 40 + 7, last: { seq: 2 ** 40 + 6, crc: 0xfedcba98 }, applied: 2 ** 40 + 1, fresh: false, empty: false, syncing: 'a1b2c3d4', adopt: true },
    { t: MsgType.CHALLENGE, v: PROTOCOL_VERSION, rds: 'replicafs', nonce: bytes(32, 4), proof: bytes(32, 5), next: 1, last: null, applied: 0, fresh: true, empty: true, syncing: null, adopt: false },
    { t: MsgType.AUTH, proof: bytes(32, 6) },
    { t: MsgType.READY },
    { t: MsgType.UPDATES, recs: [bytes(32, 7), bytes(4096 + 100, 8), bytes(1, 9)] },
    { t: MsgType.UPDATES, recs: [] },
    { t: MsgType.ACK, n: 123456789012, d: 123456789000 },
    { t: MsgType.RESEND, from: 42, why: 'gap: expected 42, got 44' },
    { t: MsgType.PING, ts: 1_700_000_000_123 },
    { t: MsgType.PONG, ts: 1_700_000_000_123 },
    { t: MsgType.REFUSE, code: 'VERSION', message: 'protocol version 99 is not supported' },
    { t: MsgType.REFUSE, code: 'TAKEN_OVER', message: 'generation 9f1c2e4a took over', gen: { id: '9f1c2e4a', since: 12, history: [{ id: 'ab', end: 12 }] } },
    // `ibc run` (issue 4): a step request and its results (a script's exit code and output; a
    // step that is not a script; a failure with the IBC message id it had received)
    { t: MsgType.TASK, id: 1, task: 'backup', step: 'onfreeze', app: 'backup', timeoutS: 120 },
    { t: MsgType.TASK, id: 2 ** 31 + 5, task: 'snap.ü-1', step: 'abort', app: 'snap.ü-1', timeoutS: 0 },
    { t: MsgType.TASK_RESULT, id: 1, code: 3, output: 'onfreeze: copying...\nfailed\n', error: null, ibcId: '0123abcd-42' },
    { t: MsgType.TASK_RESULT, id: 2 ** 31 + 5, code: null, output: '', error: 'EIBC_NO_APPLICATION: IBC application x is not registered on this host' },
    { t: MsgType.SYNC_BEGIN, id: '0a1b2c3d' },
    { t: MsgType.SYNC_ENTRY, p: '/dir/fïle', k: 'f', m: 0o100644, u: 1000, g: 1000, a: [1700000000, 5], mt: [2 ** 33, 999999999], x: [['user.a', bytes(3, 10)]], s: 2 ** 40 },
    { t: MsgType.SYNC_ENTRY, p: '/l', k: 'l', m: 0o120777, u: 0, g: 0, a: [0, 0], mt: [1, 2], x: [], l: '../target' },
    { t: MsgType.SYNC_ENTRY, p: '/b', k: 'f', m: 0o100600, u: 0, g: 0, a: [0, 0], mt: [1, 2], x: [], h: '/dir/fïle' },
    { t: MsgType.SYNC_DATA, p: '/dir/fïle', o: 2 ** 40 - 4096, d: bytes(4096, 11) },
    { t: MsgType.SYNC_DIR, p: '/dir', names: ['fïle', 'x'], a: [1, 2], mt: [3, 4] },
    { t: MsgType.SYNC_REMOVE, p: '/gone' },
    { t: MsgType.SYNC_DONE, seq: 2 ** 40 + 3 },
    { t: MsgType.SYNC_ACK, n: 12345 },
    // synchronization by difference (version 3)
    { t: MsgType.SYNC_BEGIN, id: '0a1b2c3e', d: 1, c: 1 },
    { t: MsgType.SYNC_ENTRY, p: '/dir/fïle', k: 'f', m: 0o100644, u: 1000, g: 1000, a: [1700000000, 5], mt: [2 ** 33, 999999999], x: [], s: 2 ** 40, c: 1, w: 'c' },
    { t: MsgType.SYNC_ENTRY, p: '/dir/fïle', k: 'f', m: 0o100644, u: 1000, g: 1000, a: [1700000000, 5], mt: [2 ** 33, 999999999], x: [], s: 2 ** 40, c: 2, w: 'i' },
    { t: MsgType.SYNC_SUMS, p: '/dir/fïle', s: 2 ** 40 + 1, i: 65536, h: bytes(48, 12), e: 1 },
    { t: MsgType.SYNC_SUMS, p: '/new', s: -1, i: 0, h: bytes(0, 0), e: 1 },
    // online verify (version 4)
    { t: MsgType.VERIFY_BEGIN, id: 'a1b2c3d4', seq: 2 ** 40 + 9 },
    {
      t: MsgType.VERIFY_ENTRIES,
      id: 'a1b2c3d4',
      i: 0,
      e: [
        { p: '/', k: 'd', m: 0o40755, u: 0, g: 0, mt: [1700000000, 1] },
        { p: '/dir/fïle', k: 'f', m: 0o100644, u: 1000, g: 1000, mt: [2 ** 33, 999999999], s: 2 ** 40, x: bytes(16, 13), c: bytes(32, 14) },
        { p: '/l', k: 'l', m: 0o120777, u: 0, g: 0, mt: [1, 2], l: '../target' },
        { p: '/n', k: 'n', m: 0o20644, u: 0, g: 0, mt: [1, 2], r: 0x0801 },
        { p: '/z', k: 'f', m: 0o100644, u: 0, g: 0, mt: [1, 2], s: 3, h: '/dir/fïle' }
      ]
    },
    { t: MsgType.VERIFY_ENTRIES, id: 'a1b2c3d4', i: 1, e: [], end: 1, r: bytes(16, 15) },
    { t: MsgType.VERIFY_ENTRIES, id: 'a1b2c3d4', i: 2, e: [], err: 'this Secondary is frozen' },
    { t: MsgType.VERIFY_ACK, id: 'a1b2c3d4', n: 8 },
    { t: MsgType.VERIFY_END, id: 'a1b2c3d4' },
    { t: MsgType.SYNC_DIR, p: '/big', names: ['a', 'b'], a: [1, 2], mt: [3, 4], m: 1 },
    // a Secondary that dials, and a failed-back one (version 7)
    { t: MsgType.JOIN, v: PROTOCOL_VERSION, rds: 'replicafs', name: '9f1c2e4a-0000-4000-8000-00000000abcd' },
    { t: MsgType.MIGRATE, gen: { id: '51d0c2e4-0000-4000-8000-00000000abcd', since: 7733, history: [{ id: '9f1c2e4a-0000-4000-8000-00000000abcd', end: 7733 }] }, at: 7733 },
    { t: MsgType.MIGRATED, ok: true },
    { t: MsgType.MIGRATED, ok: false, error: 'this Secondary is frozen by an IBC message' },
    { t: MsgType.SPLIT, gen: { id: '51d0c2e4-0000-4000-8000-00000000abcd', since: 7733, history: [{ id: 'ab', end: 7733 }] }, at: 7733, paths: [['/shared.txt', false], ['/dïr', true]] },
    { t: MsgType.SPLIT, paths: null },
    { t: MsgType.CHALLENGE, v: PROTOCOL_VERSION, rds: 'replicafs', nonce: bytes(32, 2), proof: bytes(32, 3), next: 43, last: null, applied: 42, fresh: false, empty: false, syncing: null, adopt: false, failback: { gen: 'ab', at: 42, paths: [['/dïr', true], ['/f', false]] } },
    { t: MsgType.CHALLENGE, v: PROTOCOL_VERSION, rds: 'replicafs', nonce: bytes(32, 2), proof: bytes(32, 3), next: 43, last: null, applied: 42, fresh: false, empty: false, syncing: null, adopt: false, failback: { gen: 'ab', at: 42, paths: null } },
    // a file's changed parts (version 5)
    { t: MsgType.SYNC_ENTRY, p: '/dir/fïle', k: 'f', m: 0o100644, u: 1000, g: 1000, a: [1700000000, 5], mt: [2 ** 33, 999999999], x: [], s: 2 ** 40, c: 1, w: 'r', z: 2 ** 33 },
    // compression (version 8)
    { t: MsgType.HELLO, v: PROTOCOL_VERSION, rds: 'replicafs', srlId: '0123456789abcdef', nonce: bytes(32, 6), rf: 2, gen: { id: 'ab', since: 0, history: [] }, z: ['zstd'] },
    { t: MsgType.CHALLENGE, v: PROTOCOL_VERSION, rds: 'replicafs', nonce: bytes(32, 2), proof: bytes(32, 3), next: 1, last: null, applied: 0, fresh: true, empty: true, syncing: null, adopt: false, z: 'zstd' },
    { t: MsgType.ZSTD, n: 4096, z: bytes(24, 7) }
  ]
}

/** Plain-data view of a message (binary fields as arrays of bytes) for deep comparison. */
function plain (m: unknown): unknown {
  if (m instanceof Uint8Array) return { bin: Array.from(m) }
  if (Array.isArray(m)) return m.map(plain)
  if (m !== null && typeof m === 'object') {
    const o: Record<string, unknown> = {}
    for (const k of Object.keys(m).sort()) o[k] = plain((m as Record<string, unknown>)[k])
    return o
  }
  return m
}

function expectProtocolError (fn: () => unknown, what: string, mention?: RegExp): void {
  let threw: unknown
  try { fn() } catch (err) { threw = err }
  assert.ok(threw !== undefined, `${what}: throws`)
  assert.ok(isReplError(threw, 'PROTOCOL'), `${what}: throws a ReplError with code PROTOCOL, got ${String(threw)} (${(threw as { code?: string }).code})`)
  if (mention) assert.match((threw as Error).message, mention, `${what}: the message says what is wrong`)
}

t('the message-type table is the one on the wire: numbers never change', () => {
  assert.equal({ ...MsgType }, {
    ...{ HELLO: 1, CHALLENGE: 2, AUTH: 3, READY: 4, UPDATES: 5, ACK: 6, RESEND: 7, PING: 8, PONG: 9, REFUSE: 10, TASK: 11, TASK_RESULT: 12 },
    ...{ 1: 'HELLO', 2: 'CHALLENGE', 3: 'AUTH', 4: 'READY', 5: 'UPDATES', 6: 'ACK', 7: 'RESEND', 8: 'PING', 9: 'PONG', 10: 'REFUSE', 11: 'TASK', 12: 'TASK_RESULT' },
    ...{ SYNC_BEGIN: 13, SYNC_ENTRY: 14, SYNC_DATA: 15, SYNC_DIR: 16, SYNC_REMOVE: 17, SYNC_DONE: 18, SYNC_ACK: 19, SYNC_SUMS: 20 },
    ...{ 13: 'SYNC_BEGIN', 14: 'SYNC_ENTRY', 15: 'SYNC_DATA', 16: 'SYNC_DIR', 17: 'SYNC_REMOVE', 18: 'SYNC_DONE', 19: 'SYNC_ACK', 20: 'SYNC_SUMS' },
    ...{ VERIFY_BEGIN: 21, VERIFY_ENTRIES: 22, VERIFY_ACK: 23, VERIFY_END: 24 },
    ...{ 21: 'VERIFY_BEGIN', 22: 'VERIFY_ENTRIES', 23: 'VERIFY_ACK', 24: 'VERIFY_END' },
    ...{ JOIN: 25, 25: 'JOIN', MIGRATE: 26, 26: 'MIGRATE', MIGRATED: 27, 27: 'MIGRATED', SPLIT: 28, 28: 'SPLIT', ZSTD: 29, 29: 'ZSTD' }
  })
  assert.is(PROTOCOL_VERSION, 8)
})

t('every message type survives encodeFrame -> FrameDecoder', timed(10_000, async () => {
  const all = samples()
  const types = new Set(all.map((m) => m.t))
  for (const v of Object.values(MsgType)) if (typeof v === 'number') assert.ok(types.has(v), `the samples cover ${MsgType[v]}`)
  for (const m of all) {
    const f = encodeFrame(m)
    assert.is(f.readUInt32LE(0), f.length - 4, `${MsgType[m.t]}: the length prefix is the body's length`)
    const d = new FrameDecoder()
    const got = d.push(f)
    assert.is(got.length, 1, `${MsgType[m.t]}: one frame decodes to one message`)
    assert.equal(plain(got[0]), plain(m), `${MsgType[m.t]} round trip`)
    assert.is(d.buffered, 0, `${MsgType[m.t]}: nothing left buffered`)
  }
  // binary fields come back as bytes (not strings or arrays), large sequence numbers as exact numbers
  const ch = new FrameDecoder().push(encodeFrame(all[1]))[0]
  assert.ok(ch.t === MsgType.CHALLENGE)
  if (ch.t === MsgType.CHALLENGE) {
    assert.instance(ch.nonce, Uint8Array)
    assert.instance(ch.proof, Uint8Array)
    assert.is(ch.next, 2 ** 40 + 7)
    assert.is(typeof ch.next, 'number')
    assert.is(ch.last?.crc, 0xfedcba98)
  }
  const up = new FrameDecoder().push(encodeFrame(all[5]))[0]
  if (up.t !== MsgType.UPDATES) throw new Error('expected UPDATES')
  assert.is(up.recs.length, 3)
  for (const r of up.recs) assert.instance(r, Uint8Array)
}))

t('TASK and TASK_RESULT round trip with their fields and types (ibc run over the RLINK)', () => {
  const all = samples().filter((m) => m.t === MsgType.TASK || m.t === MsgType.TASK_RESULT)
  assert.is(all.length, 4)
  const got = new FrameDecoder().push(Buffer.concat(all.map(encodeFrame)))
  assert.equal(plain(got), plain(all), 'TASK / TASK_RESULT frames decode to the same messages, in order')
  const [task, abort, result, failed] = got
  if (task.t !== MsgType.TASK || abort.t !== MsgType.TASK || result.t !== MsgType.TASK_RESULT || failed.t !== MsgType.TASK_RESULT) throw new Error(`unexpected types ${got.map((m) => MsgType[m.t]).join(', ')}`)
  assert.is(task.step, 'onfreeze')
  assert.is(task.timeoutS, 120)
  assert.is(abort.id, 2 ** 31 + 5, 'a task id beyond 31 bits is exact')
  assert.is(abort.task, 'snap.ü-1', 'a non-ASCII task name survives')
  assert.is(result.code, 3, 'the script\'s exit code')
  assert.is(result.error, null, 'a script that ran and failed is not a step error')
  assert.is(result.ibcId, '0123abcd-42')
  assert.is(failed.code, null, 'a step that is not a script has no exit code (nil on the wire)')
  assert.match(String(failed.error), /^EIBC_NO_APPLICATION: /)
  assert.not.ok('ibcId' in failed, 'an absent ibcId stays absent (not nil)')
  // the first byte of the body is a map, and t is the first key, 11 / 12
  const f = encodeFrame(all[0])
  const body = f.subarray(4)
  assert.ok((body[0] & 0xf0) === 0x80, 'the body is a fixmap')
  assert.equal([...body.subarray(1, 4)], [0xa1, 0x74, MsgType.TASK], 't: 11 first')
  assert.equal([...encodeFrame(all[2]).subarray(5, 8)], [0xa1, 0x74, MsgType.TASK_RESULT], 't: 12 first')
})

/**
 * The bytes of every sample's frame, as protocol version 8 writes them (docs/FORMAT.md): a changed
 * Packr option, library default or key order changes them, and with them what a peer of this
 * version reads. Frames of 200 bytes or more by SHA-256. Change only with a protocol version bump.
 */
const GOLDEN_FRAMES = [
  'ae00000087a17401a17608a3726473ad7264732dc3bc6ec3af636f6465a573726c4964b030313233343536373839616263646566a56e6f6e6365c42001203f5e7d9cbbdaf91837567594b3d2f1102f4e6d8cabcae90827466584a3c2a2726603a367656e83a26964d92439663163326534612d303030302d343030302d383030302d303030303030303061626364a573696e6365cb4270000000000000a7686973746f72799182a26964a26162a3656e6407',
  'sha256:b1edd217dcf1f7ab728a96f802a94cab76ea2b60ae652baca95f992ef2e75308',
  '980000008ca17402a17608a3726473a97265706c6963616673a56e6f6e6365c42004234261809fbeddfc1b3a597897b6d5f4133251708faecdec0b2a496887a6c5a570726f6f66c4200524436281a0bfdefd1c3b5a7998b7d6f51433527190afceed0c2b4a6988a7c6a46e65787401a46c617374c0a76170706c69656400a56672657368c3a5656d707479c3a773796e63696e67c0a561646f7074c2',
  '2c00000082a17403a570726f6f66c4200625446382a1c0dffe1d3c5b7a99b8d7f61534537291b0cfee0d2c4b6a89a8c7',
  '0400000081a17404',
  'sha256:11066ba5ec871a315bc0098ae1e9242c26ea1e78e5295aae006e4d75d9da2a0a',
  '0a00000082a17405a47265637390',
  '1a00000083a17406a16ecb423cbe991a140000a164cb423cbe991a080000',
  '2700000083a17407a466726f6d2aa3776879b86761703a2065787065637465642034322c20676f74203434',
  '1000000082a17408a27473cb4278bcfe5687b000',
  '1000000082a17409a27473cb4278bcfe5687b000',
  '3f00000083a1740aa4636f6465a756455253494f4ea76d657373616765d92470726f746f636f6c2076657273696f6e203939206973206e6f7420737570706f72746564',
  '6700000084a1740aa4636f6465aa54414b454e5f4f564552a76d657373616765bd67656e65726174696f6e20396631633265346120746f6f6b206f766572a367656e83a26964a83966316332653461a573696e63650ca7686973746f72799182a26964a26162a3656e640c',
  '3700000086a1740ba2696401a47461736ba66261636b7570a473746570a86f6e667265657a65a3617070a66261636b7570a874696d656f75745378',
  '3e00000086a1740ba26964ce80000005a47461736ba9736e61702ec3bc2d31a473746570a561626f7274a3617070a9736e61702ec3bc2d31a874696d656f75745300',
  '4b00000086a1740ca2696401a4636f646503a66f7574707574bc6f6e667265657a653a20636f7079696e672e2e2e0a6661696c65640aa56572726f72c0a56962634964ab30313233616263642d3432',
  '6700000085a1740ca26964ce80000005a4636f6465c0a66f7574707574a0a56572726f72d945454942435f4e4f5f4150504c49434154494f4e3a20494243206170706c69636174696f6e2078206973206e6f742072656769737465726564206f6e207468697320686f7374',
  '1000000082a1740da26964a83061316232633364',
  '5a0000008aa1740ea170aa2f6469722f66c3af6c65a16ba166a16dcd81a4a175cd03e8a167cd03e8a16192ce6553f10005a26d7492cb4200000000000000ce3b9ac9ffa1789192a6757365722e61c4030a2948a173cb4270000000000000',
  '320000008aa1740ea170a22f6ca16ba16ca16dcda1ffa17500a16700a161920000a26d74920102a17890a16ca92e2e2f746172676574',
  '330000008aa1740ea170a22f62a16ba166a16dcd8180a17500a16700a161920000a26d74920102a17890a168aa2f6469722f66c3af6c65',
  'sha256:20b3940984e04fe79a080079f0b572b1e9f1c7e2b40588409ba56356568501bc',
  '2500000085a17410a170a42f646972a56e616d657392a566c3af6c65a178a161920102a26d74920304',
  '0c00000082a17411a170a52f676f6e65',
  '1100000082a17412a3736571cb4270000000003000',
  '0900000082a17413a16ecd3039',
  '1600000084a1740da26964a83061316232633365a16401a16301',
  '540000008ca1740ea170aa2f6469722f66c3af6c65a16ba166a16dcd81a4a175cd03e8a167cd03e8a16192ce6553f10005a26d7492cb4200000000000000ce3b9ac9ffa17890a173cb4270000000000000a16301a177a163',
  '540000008ca1740ea170aa2f6469722f66c3af6c65a16ba166a16dcd81a4a175cd03e8a167cd03e8a16192ce6553f10005a26d7492cb4200000000000000ce3b9ac9ffa17890a173cb4270000000000000a16302a177a169',
  '5a00000086a17414a170aa2f6469722f66c3af6c65a173cb4270000000001000a169ce00010000a168c4300c2b4a6988a7c6e504234261809fbeddfc1b3a597897b6d5f4133251708faecdec0b2a496887a6c5e4032241607f9ebda16501',
  '1800000086a17414a170a42f6e6577a173ffa16900a168c400a16501',
  '1d00000083a17415a26964a86131623263336434a3736571cb4270000000009000',
  'sha256:45f85496161c5fe9f93edf6f34aeee8255a00e580cd2ed86deb76208bb4a9050',
  '2f00000086a17416a26964a86131623263336434a16901a16590a3656e6401a172c4100f2e4d6c8baac9e80726456483a2c1e0',
  '3300000085a17416a26964a86131623263336434a16902a16590a3657272b874686973205365636f6e646172792069732066726f7a656e',
  '1300000083a17417a26964a86131623263336434a16e08',
  '1000000082a17418a26964a86131623263336434',
  '2400000086a17410a170a42f626967a56e616d657392a161a162a161920102a26d74920304a16d01',
  '4000000084a17419a17608a3726473a97265706c6963616673a46e616d65d92439663163326534612d303030302d343030302d383030302d303030303030303061626364',
  '7b00000083a1741aa367656e83a26964d92435316430633265342d303030302d343030302d383030302d303030303030303061626364a573696e6365cd1e35a7686973746f72799182a26964d92439663163326534612d303030302d343030302d383030302d303030303030303061626364a3656e64cd1e35a26174cd1e35',
  '0800000082a1741ba26f6bc3',
  '3a00000083a1741ba26f6bc2a56572726f72d92a74686973205365636f6e646172792069732066726f7a656e20627920616e20494243206d657373616765',
  '7500000084a1741ca367656e83a26964d92435316430633265342d303030302d343030302d383030302d303030303030303061626364a573696e6365cd1e35a7686973746f72799182a26964a26162a3656e64cd1e35a26174cd1e35a570617468739292ab2f7368617265642e747874c292a52f64c3af72c3',
  '0b00000082a1741ca57061746873c0',
  'c10000008da17402a17608a3726473a97265706c6963616673a56e6f6e6365c4200221405f7e9dbcdbfa1938577695b4d3f211304f6e8daccbea0928476685a4c3a570726f6f66c420032241607f9ebddcfb1a39587796b5d4f31231506f8eadcceb0a29486786a5c4a46e6578742ba46c617374c0a76170706c6965642aa56672657368c2a5656d707479c2a773796e63696e67c0a561646f7074c2a86661696c6261636b83a367656ea26162a261742aa570617468739292a52f64c3af72c392a22f66c2',
  'b40000008da17402a17608a3726473a97265706c6963616673a56e6f6e6365c4200221405f7e9dbcdbfa1938577695b4d3f211304f6e8daccbea0928476685a4c3a570726f6f66c420032241607f9ebddcfb1a39587796b5d4f31231506f8eadcceb0a29486786a5c4a46e6578742ba46c617374c0a76170706c6965642aa56672657368c2a5656d707479c2a773796e63696e67c0a561646f7074c2a86661696c6261636b83a367656ea26162a261742aa57061746873c0',
  '5f0000008da1740ea170aa2f6469722f66c3af6c65a16ba166a16dcd81a4a175cd03e8a167cd03e8a16192ce6553f10005a26d7492cb4200000000000000ce3b9ac9ffa17890a173cb4270000000000000a16301a177a172a17acb4200000000000000',
  '7b00000088a17401a17608a3726473a97265706c6963616673a573726c4964b030313233343536373839616263646566a56e6f6e6365c4200625446382a1c0dffe1d3c5b7a99b8d7f61534537291b0cfee0d2c4b6a89a8c7a2726602a367656e83a26964a26162a573696e636500a7686973746f727990a17a91a47a737464',
  '9f0000008da17402a17608a3726473a97265706c6963616673a56e6f6e6365c4200221405f7e9dbcdbfa1938577695b4d3f211304f6e8daccbea0928476685a4c3a570726f6f66c420032241607f9ebddcfb1a39587796b5d4f31231506f8eadcceb0a29486786a5c4a46e65787401a46c617374c0a76170706c69656400a56672657368c3a5656d707479c3a773796e63696e67c0a561646f7074c2a17aa47a737464',
  '2500000083a1741da16ecd1000a17ac4180726456483a2c1e0ff1e3d5c7b9ab9d8f71635547392b1d0'
]

t('encoding is a contract: every sample frame has its protocol-version-8 bytes', () => {
  const all = samples()
  assert.is(all.length, GOLDEN_FRAMES.length)
  all.forEach((m, i) => {
    const f = encodeFrame(m)
    const got = f.length < 200 ? f.toString('hex') : 'sha256:' + crypto.createHash('sha256').update(f).digest('hex')
    assert.is(got, GOLDEN_FRAMES[i], `sample ${i} (${MsgType[m.t]})`)
  })
})

t('a stream split at every byte boundary decodes to the same messages', timed(30_000, async () => {
  const all = samples()
  const stream = Buffer.concat(all.map(encodeFrame))
  const want = plain(all)
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new FrameDecoder()
    // copies, so no message can be a view into a chunk the decoder was not given
    const got = [...d.push(Buffer.from(stream.subarray(0, cut))), ...d.push(Buffer.from(stream.subarray(cut)))]
    if (JSON.stringify(plain(got)) !== JSON.stringify(want)) {
      assert.equal(plain(got), want, `split at byte ${cut} of ${stream.length}`)
    }
    assert.is(d.buffered, 0, `split at ${cut}: nothing left buffered`)
  }
  // and one byte at a time: every push returns exactly the frames completed by that byte
  const d = new FrameDecoder()
  const ends = new Set<number>()
  let off = 0
  for (const m of all) { off += encodeFrame(m).length; ends.add(off) }
  const got: Message[] = []
  for (let i = 0; i < stream.length; i++) {
    const out = d.push(stream.subarray(i, i + 1))
    assert.is(out.length, ends.has(i + 1) ? 1 : 0, `byte ${i + 1} ${ends.has(i + 1) ? 'completes' : 'does not complete'} a frame`)
    got.push(...out)
    if (!ends.has(i + 1)) assert.ok(d.buffered > 0, `byte ${i + 1}: a partial frame is buffered`)
  }
  assert.equal(plain(got), want, 'byte-at-a-time decoding')
  assert.is(d.buffered, 0)
}))

t('several frames in one chunk, and a chunk ending mid-frame', () => {
  const all = samples()
  const stream = Buffer.concat(all.map(encodeFrame))
  const d = new FrameDecoder()
  assert.equal(plain(d.push(stream)), plain(all), 'all frames from one chunk, in order')
  const two = Buffer.concat([encodeFrame(all[0]), encodeFrame(all[3])])
  const extra = encodeFrame(all[7])
  const d2 = new FrameDecoder()
  const first = d2.push(Buffer.concat([two, extra.subarray(0, 5)]))
  assert.equal(plain(first), plain([all[0], all[3]]), 'the complete frames before a partial one')
  assert.is(d2.buffered, 5, 'the partial frame stays buffered')
  assert.equal(plain(d2.push(extra.subarray(5))), plain([all[7]]), 'and completes with the rest')
  // a chunk holding only part of a length prefix
  const d3 = new FrameDecoder()
  const f = encodeFrame(all[4])
  assert.equal(d3.push(f.subarray(0, 2)), [])
  assert.equal(d3.push(f.subarray(2, 3)), [])
  assert.equal(plain(d3.push(f.subarray(3))), plain([all[4]]))
})

t('an oversized length prefix is rejected with PROTOCOL, before the body arrives', () => {
  const head = Buffer.alloc(4)
  head.writeUInt32LE(WIRE_FRAME_BYTES_MAX + 1, 0)
  expectProtocolError(() => new FrameDecoder().push(head), 'length MAX+1', /frame|bytes|limit/i)
  head.writeUInt32LE(0xffffffff, 0)
  expectProtocolError(() => new FrameDecoder().push(head), 'length 0xffffffff', /frame|bytes|limit/i)
  // after good frames in the same chunk, too
  const good = encodeFrame({ t: MsgType.PING, ts: 1 })
  expectProtocolError(() => new FrameDecoder().push(Buffer.concat([good, head])), 'oversized prefix after a good frame')
  // a prefix split across chunks
  const d = new FrameDecoder()
  assert.equal(d.push(head.subarray(0, 3)), [])
  expectProtocolError(() => d.push(head.subarray(3)), 'oversized prefix split across chunks')
  // exactly the maximum is allowed: the decoder waits for the body
  const max = Buffer.alloc(4)
  max.writeUInt32LE(WIRE_FRAME_BYTES_MAX, 0)
  const d2 = new FrameDecoder()
  assert.equal(d2.push(max), [], 'a frame of exactly WIRE_FRAME_BYTES_MAX is waited for, not refused')
  assert.is(d2.buffered, 4)
})

t('encodeFrame refuses a body over the limit with PROTOCOL', () => {
  const big: Message = { t: MsgType.UPDATES, recs: [Buffer.alloc(WIRE_FRAME_BYTES_MAX / 2), Buffer.alloc(WIRE_FRAME_BYTES_MAX / 2)] }
  expectProtocolError(() => encodeFrame(big), 'UPDATES over WIRE_FRAME_BYTES_MAX', /exceeds|limit|bytes/i)
  // just under the limit encodes, and decodes
  const ok: Message = { t: MsgType.UPDATES, recs: [Buffer.alloc(WIRE_FRAME_BYTES_MAX - 64, 0x5a)] }
  const f = encodeFrame(ok)
  assert.ok(f.length - 4 <= WIRE_FRAME_BYTES_MAX)
  const got = new FrameDecoder().push(f)
  assert.is(got.length, 1)
  if (got[0].t !== MsgType.UPDATES) throw new Error('expected UPDATES')
  assert.is(got[0].recs[0].length, WIRE_FRAME_BYTES_MAX - 64)
})

t('encodeFrameParts: a SYNC_DATA frame in two parts, the data not copied, the same bytes as encodeFrame at every bin-header size', () => {
  // lengths around each msgpack bin header (bin 8 / 16 / 32) and the largest chunk a sync sends
  const lengths = [1, 2, 0xff, 0x100, 0x101, 0xffff, 0x10000, 0x10001, 256 * 1024]
  const paths = ['/a', '/dïr/' + 'x'.repeat(300)]
  const offsets = [0, 127, 2 ** 40 - 4096]
  for (const n of lengths) {
    for (const p of paths) {
      for (const o of offsets) {
        // data that is a view into a larger buffer, as a read into a chunk buffer is
        const backing = Buffer.alloc(n + 16, n & 0xff)
        backing[8] = 0x5a
        backing[7 + n] = 0xa5
        const d = backing.subarray(8, 8 + n)
        const m: Message = { t: MsgType.SYNC_DATA, p, o, d }
        const parts = encodeFrameParts(m)
        assert.is(parts.length, 2, `${n} bytes: two parts`)
        assert.ok(parts[1].buffer === backing.buffer && parts[1].byteOffset === d.byteOffset && parts[1].length === n, `${n} bytes: the second part is the data itself, not a copy`)
        const joined = Buffer.concat(parts)
        assert.ok(joined.equals(encodeFrame(m)), `${n} bytes at ${o}, path of ${p.length}: the same bytes as encodeFrame`)
        const got = new FrameDecoder().push(joined)
        assert.is(got.length, 1)
        const back = got[0]
        if (back.t !== MsgType.SYNC_DATA) throw new Error('expected SYNC_DATA')
        assert.is(back.p, p)
        assert.is(back.o, o)
        assert.ok(Buffer.from(back.d).equals(d), `${n} bytes: the data round trips`)
      }
    }
  }
  // other frames, and a SYNC_DATA with no data: one part, encodeFrame's
  for (const m of samples()) {
    const parts = encodeFrameParts(m)
    if (m.t === MsgType.SYNC_DATA) continue
    assert.is(parts.length, 1, `${MsgType[m.t]}: one part`)
    assert.ok(parts[0].equals(encodeFrame(m)), `${MsgType[m.t]}: encodeFrame's bytes`)
  }
  const empty: Message = { t: MsgType.SYNC_DATA, p: '/e', o: 5, d: Buffer.alloc(0) }
  assert.is(encodeFrameParts(empty).length, 1)
  assert.ok(encodeFrameParts(empty)[0].equals(encodeFrame(empty)))
  // over the limit: PROTOCOL, as encodeFrame
  expectProtocolError(() => encodeFrameParts({ t: MsgType.SYNC_DATA, p: '/big', o: 0, d: Buffer.alloc(WIRE_FRAME_BYTES_MAX) }), 'SYNC_DATA over WIRE_FRAME_BYTES_MAX', /exceeds/)
})

t('bodies that are not messages are rejected with PROTOCOL', () => {
  const frame = (body: Buffer): Buffer => {
    const h = Buffer.alloc(4)
    h.writeUInt32LE(body.length, 0)
    return Buffer.concat([h, body])
  }
  expectProtocolError(() => new FrameDecoder().push(frame(Buffer.from([0xc1]))), 'reserved msgpack byte 0xc1')
  expectProtocolError(() => new FrameDecoder().push(frame(Buffer.from([0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f]))), 'a string body ("hello")', /not a message/i)
  expectProtocolError(() => new FrameDecoder().push(frame(Buffer.from([0xc0]))), 'a nil body', /not a message/i)
  expectProtocolError(() => new FrameDecoder().push(frame(Buffer.from([0x81, 0xa1, 0x78, 0x01]))), 'a map without t ({x: 1})', /not a message/i)
  expectProtocolError(() => new FrameDecoder().push(frame(Buffer.from([0x81, 0xa1, 0x74, 0xa1, 0x31]))), 'a map whose t is a string', /not a message/i)
  expectProtocolError(() => new FrameDecoder().push(frame(Buffer.alloc(0))), 'an empty body')
  expectProtocolError(() => new FrameDecoder().push(frame(Buffer.from('GET / HTTP/1.1\r\n'))), 'text where a body should be')
})

t('proof(): 32 bytes, deterministic, and different for every role, nonce, RDS, secret and channel binding', () => {
  const secret = Buffer.from('correct horse battery staple')
  const E = Buffer.alloc(0)
  const a = nonce()
  const b = nonce()
  assert.is(a.length, 32)
  assert.not.ok(a.equals(b), 'two nonces differ')
  const base = proof(secret, 'primary', a, b, 'rds', E)
  assert.is(base.length, 32)
  assert.ok(base.equals(proof(Buffer.from(secret), 'primary', Buffer.from(a), Buffer.from(b), 'rds', E)), 'deterministic')
  const variants: Array<[string, Buffer]> = [
    ['role', proof(secret, 'secondary', a, b, 'rds', E)],
    ['their nonce', proof(secret, 'primary', nonce(), b, 'rds', E)],
    ['our nonce', proof(secret, 'primary', a, nonce(), 'rds', E)],
    ['nonces swapped', proof(secret, 'primary', b, a, 'rds', E)],
    ['rds', proof(secret, 'primary', a, b, 'rdt', E)],
    ['secret', proof(Buffer.from('correct horse battery stapl3'), 'primary', a, b, 'rds', E)],
    ['secret with a trailing newline', proof(Buffer.concat([secret, Buffer.from('\n')]), 'primary', a, b, 'rds', E)],
    ['TLS channel binding (another session)', proof(secret, 'primary', a, b, 'rds', Buffer.alloc(32, 1))]
  ]
  for (const [what, p] of variants) assert.not.ok(p.equals(base), `a different ${what} gives a different proof`)
  // the secret itself never appears in the proof
  assert.is(base.indexOf(secret.subarray(0, 8)), -1)
})

t('proofOk(): true only for the same bytes; wrong length or type is false, never a throw', () => {
  const want = proof(Buffer.from('s'), 'secondary', nonce(), nonce(), 'r', Buffer.alloc(0))
  assert.ok(proofOk(Buffer.from(want), want), 'a copy of the proof')
  assert.ok(proofOk(new Uint8Array(want), want), 'a plain Uint8Array (as decoded off the wire)')
  const decoded = new FrameDecoder().push(encodeFrame({ t: MsgType.AUTH, proof: want }))[0]
  assert.ok(decoded.t === MsgType.AUTH && proofOk(decoded.proof, want), 'the proof after an AUTH frame round trip')
  for (let i = 0; i < want.length; i += 7) {
    const bad = Buffer.from(want)
    bad[i] ^= 1
    assert.not.ok(proofOk(bad, want), `one bit flipped at byte ${i}`)
  }
  const wrong: Array<[string, unknown]> = [
    ['shorter', want.subarray(0, 31)],
    ['longer', Buffer.concat([want, Buffer.alloc(1)])],
    ['empty', Buffer.alloc(0)],
    ['a string', want.toString('latin1')],
    ['a hex string', want.toString('hex')],
    ['an array of numbers', Array.from(want)],
    ['null', null],
    ['undefined', undefined],
    ['a number', 42],
    ['an object', { 0: want[0], length: 32 }]
  ]
  for (const [what, got] of wrong) {
    let r: unknown
    try { r = proofOk(got, want) } catch (err) { assert.unreachable(`proofOk(${what}) threw: ${(err as Error).message}`) }
    assert.is(r, false, `proofOk(${what}) is false`)
  }
})

t.run()
