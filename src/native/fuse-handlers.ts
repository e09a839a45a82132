/**
 * The fuse-native handlers replicafs owns. fuse-native's JavaScript turns each op's arguments
 * into a call of `ops.<name>` and its answer into a call of the bridge's `fuse_native_signal_*`;
 * where that translation is wrong, or where our bridge (fuse_bridge.c) has ops fuse-native does
 * not know, it is replaced here, on fuse-native's prototype, once, by loadFuse(). node_modules is
 * never patched.
 *
 * - Ops fuse-native does not know (`extendHandlerTable`): fallocate (op 35, bridge change 9),
 *   getattr of a node libfuse can no longer name (op 36, change 15) and the end of the FUSE
 *   session (op 37, change 16). The implemented array grows to 38 entries and the handler table
 *   gets one handler for each, following fuse-native's handler protocol: called as
 *   (nativeHandler, opCode, ...args), answering with process.nextTick(signal, nativeHandler, res,
 *   ...), with fuse-native's timeout rules.
 * - Handlers that fill the caller's buffer (`_op_getxattr`, `_op_listxattr`): fuse-native wrote
 *   the value or the name list into the kernel's buffer without checking its size, so a short
 *   buffer from any user threw a RangeError in the daemon (it died) or made libfuse send more than
 *   asked (the caller got EIO). Now, as the kernel's contract says: size 0 asks for the size, a
 *   buffer that is too small is ERANGE. The bridge checks the same again (change 11), and also
 *   bounds read and write results and readlink targets, and answers EIO to any malformed answer
 *   instead of leaving the FUSE thread waiting.
 */
import { constants as osc } from 'node:os'
import type { FuseCb, FuseOperations, FuseStat } from './types'

const E = osc.errno

/** fuse-native's default op timeout (ms) and the errno it reports on expiry (Linux). */
const FUSE_DEFAULT_TIMEOUT_MS = 15 * 1000
const FUSE_TIMEOUT_ERRNO = -E.ETIMEDOUT
/** Op numbers of our bridge; fuse-native's own ops are 0..33 and 34 is unused. */
export const FUSE_OP_FALLOCATE = 35
export const FUSE_OP_GETATTR_NODE = 36
export const FUSE_OP_SESSION_END = 37
/** The implemented array and handler table our bridge reads (REPLICAFS_OP_COUNT). */
const FUSE_OP_COUNT = 38

/** The parts of our bridge's exports the handlers use. */
export interface FuseBridge {
  op_fallocate?: number
  op_getattr_node?: number
  op_session_end?: number
  fuse_native_signal_fallocate?: (nativeHandler: unknown, res: number) => void
  fuse_native_signal_getattr_node?: (nativeHandler: unknown, res: number, stat?: Uint32Array) => void
}

/** The private fuse-native instance members these handlers touch. */
interface FuseNativeInternals {
  ops?: FuseOperations | null
  timeout: number | false | Record<string, number | false | undefined>
  /** Set by the user of the instance (FuseInstance.onSessionEnd). */
  onSessionEnd?: () => void
  _getImplementedArray(): Uint32Array
  _makeHandlerArray(): unknown[]
  _op_getxattr(signal: (...a: unknown[]) => void, path: string, name: string, valueBuf: Buffer, position: number): void
  _op_listxattr(signal: (...a: unknown[]) => void, path: string, listBuf: Buffer): void
}

/** The xattr ops as our adapters implement them (fuse-native's README signatures). */
interface XattrOps {
  getxattr(p: string, name: string, position: number, cb: (err: number, value?: Buffer) => void): void
  listxattr(p: string, cb: (err: number, list?: string[]) => void): void
}

const PATCHED = Symbol.for('replicafs.fuse.handlers')

/** A stat as the bridge's populate_stat reads it (fuse-native's getStatArray layout, 18 words). */
export function statArray (st: FuseStat): Uint32Array {
  const ints = new Uint32Array(18)
  const pair = (i: number, n: number): void => {
    // Two's complement across the pair for negative numbers (times before 1970).
    ints[i] = n % 4294967296
    ints[i + 1] = (n - ints[i]) / 4294967296
  }
  ints[0] = st.mode
  ints[1] = st.uid ?? 0
  ints[2] = st.gid ?? 0
  pair(3, st.size ?? 0)
  ints[5] = st.dev ?? 0
  ints[6] = st.nlink ?? 1
  ints[7] = st.ino ?? 0
  ints[8] = st.rdev ?? 0
  ints[9] = st.blksize ?? 0
  pair(10, st.blocks ?? 0)
  pair(12, st.atime)
  pair(14, st.mtime)
  pair(16, st.ctime)
  return ints
}

/** fuse-native's per-op timeout resolution for op `name`. */
function timeoutOf (t: FuseNativeInternals['timeout'], name: string): number | false | undefined {
  if (typeof t === 'object' && t !== null) {
    const to = t[name]
    return !to && to !== false ? (t.default || FUSE_DEFAULT_TIMEOUT_MS) : to
  }
  return t
}

/**
 * `reply(res, ...rest)` once: the first call wins (an answer after the timeout is dropped, as in
 * fuse-native). The bridge reads an int32 result; anything else would be EIO there, so it is
 * normalised here: undefined/null is 0, a non-integer truthy value -EIO.
 */
function once (signal: (res: number, ...rest: unknown[]) => void, to: number | false | undefined, timeoutRest: unknown[]): (err: unknown, ...rest: unknown[]) => void {
  let done = false
  let timer: NodeJS.Timeout | undefined
  const reply = (err: unknown, ...rest: unknown[]): void => {
    if (done) return
    done = true
    if (timer !== undefined) clearTimeout(timer)
    const res = err === undefined || err === null ? 0 : Number.isInteger(err) ? (err as number) | 0 : err ? -E.EIO : 0
    process.nextTick(signal, res, ...rest)
  }
  if (to) timer = setTimeout(() => reply(FUSE_TIMEOUT_ERRNO, ...timeoutRest), to)
  return reply
}

/**
 * Extends fuse-native's class once (see the header). Throws if the bridge lacks an op or
 * fuse-native's private methods moved (a fuse-native upgrade must be looked at).
 */
export function patchFuseNative (Fuse: { prototype: object }, bridge: FuseBridge): void {
  const signalFallocate = bridge.fuse_native_signal_fallocate
  const signalGetattrNode = bridge.fuse_native_signal_getattr_node
  if (bridge.op_fallocate !== FUSE_OP_FALLOCATE || bridge.op_getattr_node !== FUSE_OP_GETATTR_NODE || bridge.op_session_end !== FUSE_OP_SESSION_END ||
      typeof signalFallocate !== 'function' || typeof signalGetattrNode !== 'function') {
    throw new Error(`replicafs fuse bridge lacks ops 35-37 (op_fallocate=${String(bridge.op_fallocate)}, op_getattr_node=${String(bridge.op_getattr_node)}); rebuild it with npm run prebuild-native`)
  }
  const proto = Fuse.prototype as FuseNativeInternals & { [PATCHED]?: true }
  if (proto[PATCHED]) return
  const origImplemented = proto._getImplementedArray
  const origHandlers = proto._makeHandlerArray
  if (typeof origImplemented !== 'function' || typeof origHandlers !== 'function' ||
      typeof proto._op_getxattr !== 'function' || typeof proto._op_listxattr !== 'function') {
    throw new Error('cannot extend fuse-native: _getImplementedArray/_makeHandlerArray/_op_getxattr/_op_listxattr not found (fuse-native version changed?)')
  }

  proto._getImplementedArray = function (this: FuseNativeInternals): Uint32Array {
    const base = origImplemented.call(this)
    const out = new Uint32Array(Math.max(base.length, FUSE_OP_COUNT))
    out.set(base)
    out[FUSE_OP_FALLOCATE] = typeof this.ops?.fallocate === 'function' ? 1 : 0
    out[FUSE_OP_GETATTR_NODE] = typeof this.ops?.getattrNode === 'function' ? 1 : 0
    return out
  }

  proto._makeHandlerArray = function (this: FuseNativeInternals): unknown[] {
    const handlers = origHandlers.call(this)
    const self = this
    const fallocateTimeout = timeoutOf(self.timeout, 'fallocate')
    const getattrNodeTimeout = timeoutOf(self.timeout, 'getattrNode')
    // (nativeHandler, opCode, path, mode, offsetLow, offsetHigh, lengthLow, lengthHigh, fh)
    handlers[FUSE_OP_FALLOCATE] = function fallocateHandler (nativeHandler: unknown, _op: number, p: string, mode: number,
      offsetLow: number, offsetHigh: number, lengthLow: number, lengthHigh: number, fh: number): void {
      const reply = once((res) => signalFallocate(nativeHandler, res), fallocateTimeout, [])
      const fn = self.ops?.fallocate
      if (typeof fn !== 'function') { reply(-E.ENOSYS); return } // not reached: registered only when implemented
      fn.call(self.ops, p, mode, offsetLow + offsetHigh * 4294967296, lengthLow + lengthHigh * 4294967296, fh, reply as FuseCb)
    }
    // (nativeHandler, opCode, nodeLow, nodeHigh) -> signal(nativeHandler, res, statArray)
    handlers[FUSE_OP_GETATTR_NODE] = function getattrNodeHandler (nativeHandler: unknown, _op: number, nodeLow: number, nodeHigh: number): void {
      const reply = once((res, st) => signalGetattrNode(nativeHandler, res, st as Uint32Array | undefined), getattrNodeTimeout, [])
      const fn = self.ops?.getattrNode
      if (typeof fn !== 'function') { reply(-E.ENOENT); return }
      fn.call(self.ops, nodeLow + nodeHigh * 4294967296, (err: number, st?: FuseStat) => {
        if (err !== 0 || st === undefined) reply(err !== 0 ? err : -E.EIO)
        else reply(0, statArray(st))
      })
    }
    // (null, opCode): the session is over; nothing to answer.
    handlers[FUSE_OP_SESSION_END] = function sessionEndHandler (): void {
      self.onSessionEnd?.()
    }
    return handlers
  }

  proto._op_getxattr = function (this: FuseNativeInternals, signal, p, name, valueBuf, position): void {
    const ops = this.ops as unknown as XattrOps
    ops.getxattr(p, name, position, (err, value) => {
      if (err) return signal(err, valueBuf.buffer)
      if (!value) return signal(-E.ENODATA, valueBuf.buffer)
      if (valueBuf.length === 0) return signal(value.length, valueBuf.buffer)
      if (value.length > valueBuf.length) return signal(-E.ERANGE, valueBuf.buffer)
      value.copy(valueBuf)
      return signal(value.length, valueBuf.buffer)
    })
  }

  proto._op_listxattr = function (this: FuseNativeInternals, signal, p, listBuf): void {
    const ops = this.ops as unknown as XattrOps
    ops.listxattr(p, (err, list) => {
      if (err) return signal(err, listBuf.buffer)
      // Each name NUL-terminated, in the order given.
      const names = Buffer.from((list ?? []).map((n) => n + '\0').join(''))
      if (listBuf.length === 0) return signal(names.length, listBuf.buffer)
      if (names.length > listBuf.length) return signal(-E.ERANGE, listBuf.buffer)
      names.copy(listBuf)
      return signal(names.length, listBuf.buffer)
    })
  }

  Object.defineProperty(proto, PATCHED, { value: true })
}
