/**
 * CRC-32C (Castagnoli), the checksum of SRL records, wire frames' records and the Secondary's
 * cursor. `crc32c(buf, prev)` chains: crc32c(a ++ b) = crc32c(b, crc32c(a)).
 *
 * The addon's version (src/native/sys.c) runs three hardware streams at once, about 3x
 * @node-rs/crc32's single stream here (5.9 µs instead of 17.6 µs per 128 KiB write, which every
 * big write pays before its reply); where the CPU lacks SSE4.2 the addon does not export it and
 * @node-rs/crc32 is used. Both give the same values (test/native.test.ts compares them).
 */
import { crc32c as portable } from '@node-rs/crc32'
import { sys } from '../native'

export const crc32c: (buf: Uint8Array, prev?: number) => number =
  typeof sys.crc32c === 'function' ? sys.crc32c : (buf, prev) => portable(buf as Buffer, prev) >>> 0

/** Whether the addon's three-stream version is in use. */
export const crc32cAccelerated = typeof sys.crc32c === 'function'
