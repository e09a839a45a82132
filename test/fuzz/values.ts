/**
 * Generators of msgpack content for the targets: JS values of every kind msgpack carries (with
 * the boundaries of each encoding), and raw msgpack bytes whose headers may declare more than
 * follows or name the extensions msgpackr decodes.
 */
import fc from 'fast-check'
import { Packr } from 'msgpackr'

/** A Packr with the wire's and the SRL's options (their bytes for the same values). */
export const packr = new Packr({
  useRecords: false,
  structures: undefined,
  moreTypes: false,
  bundleStrings: false,
  int64AsType: 'number',
  mapsAsObjects: true,
  variableMapSize: true,
  copyBuffers: false,
  useFloat32: 0,
  encodeUndefinedAsNil: false
} as ConstructorParameters<typeof Packr>[0])

const edgeNumbers = [0, -1, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 64,
  -0x20, -0x21, -0x80, -0x81, -0x8000, -0x80000000, -(2 ** 53), 0.5, -0, NaN, Infinity, -Infinity, 1e300]

export const number: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(...edgeNumbers),
  fc.integer(),
  fc.nat({ max: 200 }),
  fc.double()
)

export const string: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'grapheme', maxLength: 8 }),
  fc.constantFrom('', '/', '/a', '/..', '/../etc', '/a/./b', 'a\0b', '\uD800', 'ü'.repeat(40), 'x'.repeat(300)),
  fc.string({ unit: 'binary', maxLength: 40 })
)

export const bytes: fc.Arbitrary<Uint8Array> = fc.oneof(fc.uint8Array({ maxLength: 48 }), fc.constantFrom(32, 0, 1, 255, 256, 4096).map((n) => new Uint8Array(n)))

/** Keys of the wire's messages and of records' metadata, and some others. */
export const KEYS = ['t', 'v', 'rds', 'srlId', 'nonce', 'rf', 'gen', 'id', 'since', 'history', 'end', 'proof', 'next', 'last', 'seq', 'crc', 'applied',
  'fresh', 'empty', 'syncing', 'adopt', 'failback', 'at', 'paths', 'recs', 'n', 'd', 'from', 'why', 'ts', 'code', 'message', 'task', 'step', 'app',
  'timeoutS', 'output', 'error', 'ibcId', 'p', 'k', 'm', 'u', 'g', 'a', 'mt', 'x', 's', 'c', 'l', 'r', 'h', 'w', 'z', 'o', 'names', 'i', 'e', 'name',
  'ok', 'f', 'cmd', '__proto__', 'constructor', 'toString', 'valueOf', 'length']
/** KEYS as an object's own keys (fast-check's dictionary would set a prototype with '__proto__'). */
const OWN_KEYS = KEYS.filter((k) => k !== '__proto__')

/** Any value msgpack carries, nested a few levels. */
export const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  v: fc.oneof({ depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(null, true, false),
    number,
    string,
    bytes,
    fc.array(tie('v'), { maxLength: 5 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...OWN_KEYS), fc.string({ maxLength: 4 }).filter((k) => k !== '__proto__')), tie('v'), { maxKeys: 5 }))
})).v

/** An object with some of `keys`, each a value of any kind. */
export function objectOf (keys: string[]): fc.Arbitrary<Record<string, unknown>> {
  return fc.dictionary(fc.constantFrom(...keys.filter((k) => k !== '__proto__')), value, { maxKeys: keys.length })
}

function u32be (n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b }

/**
 * Raw msgpack bytes: well-formed values, and headers that lie (a str32/bin32/array32/map32/ext32
 * declaring far more than follows), the extension types msgpackr decodes (Error, structured
 * clone ids and pointers, Set, typed arrays, RegExp, bundled strings, BigInt, timestamps, records).
 */
export const rawMsgpack: fc.Arbitrary<Buffer> = fc.letrec<{ r: Buffer }>((tie) => ({
  r: fc.oneof({ depthSize: 'small' },
    value.map((v) => Buffer.from(packr.pack(v))),
    fc.tuple(fc.constantFrom(0xdb, 0xc6, 0xdd, 0xdf, 0xc9), fc.constantFrom(0xffffffff, 0x7fffffff, 0x10000, 9, 100), tie('r'))
      .map(([tok, n, rest]) => Buffer.concat([Buffer.from([tok]), u32be(n), tok === 0xc9 ? Buffer.from([0x65]) : Buffer.alloc(0), rest])),
    fc.tuple(fc.constantFrom(0xda, 0xc5, 0xdc, 0xde), fc.constantFrom(0xffff, 0x100, 5), tie('r'))
      .map(([tok, n, rest]) => Buffer.concat([Buffer.from([tok, n >> 8, n & 0xff]), rest])),
    fc.tuple(fc.integer({ min: 0x90, max: 0x9f }), fc.array(tie('r'), { maxLength: 4 })).map(([tok, items]) => Buffer.concat([Buffer.from([tok]), ...items])),
    fc.tuple(fc.integer({ min: 0x80, max: 0x8f }), fc.array(tie('r'), { maxLength: 6 })).map(([tok, items]) => Buffer.concat([Buffer.from([tok]), ...items])),
    // fixext 1/2/4/8/16 and ext8 of the types msgpackr knows, with a value after (the ones that read one)
    fc.tuple(fc.constantFrom(0xd4, 0xd5, 0xd6, 0xd7, 0xd8), fc.constantFrom(0x00, 0x42, 0x62, 0x65, 0x69, 0x70, 0x72, 0x73, 0x74, 0x78, 0xff, 0x01),
      fc.uint8Array({ minLength: 16, maxLength: 16 }), tie('r'))
      .map(([tok, type, body, rest]) => Buffer.concat([Buffer.from([tok, type]), Buffer.from(body.subarray(0, [1, 2, 4, 8, 16][tok - 0xd4])), rest])),
    fc.tuple(fc.constantFrom(0x00, 0x42, 0x62, 0x65, 0x69, 0x70, 0x73, 0x74, 0x78, 0xff), fc.uint8Array({ maxLength: 40 }), tie('r'))
      .map(([type, body, rest]) => Buffer.concat([Buffer.from([0xc7, body.length, type]), Buffer.from(body), rest])),
    fc.uint8Array({ maxLength: 8 }).map((u) => Buffer.from(u)),
    // deep nesting (msgpackr recurses)
    fc.tuple(fc.integer({ min: 1, max: 20000 }), fc.constantFrom(0x91, 0x81, 0xdc)).map(([n, tok]) => tok === 0x81
      ? Buffer.concat([Buffer.from('81a161'.repeat(n), 'hex'), Buffer.from([0xc0])])
      : Buffer.concat([Buffer.alloc(n, tok === 0xdc ? 0x91 : tok), Buffer.from([0xc0])]))
  )
})).r
