/**
 * Child-process xattr tool for the tests (Node has no xattr API; the project's native addon does,
 * but its calls are synchronous, so the test runner must not make them on a FUSE mount itself).
 *
 *   node xattr-tool.js set PATH NAME HEXVALUE [create|replace]
 *   node xattr-tool.js get PATH NAME          -> {"value":"<hex>"}
 *   node xattr-tool.js list PATH              -> {"names":[...]}
 *   node xattr-tool.js remove PATH NAME
 * Prints one JSON line; errors as {"error":"ECODE"} with exit 0 (the test asserts on them).
 */
import { sys } from '../../src/native'

function main (): void {
  const [op, p, name, hex, flag] = process.argv.slice(2)
  try {
    switch (op) {
      case 'set': {
        const flags = flag === 'create' ? sys.XATTR_CREATE : flag === 'replace' ? sys.XATTR_REPLACE : 0
        sys.lsetxattr(p, name, Buffer.from(hex ?? '', 'hex'), flags)
        console.log(JSON.stringify({ ok: true }))
        break
      }
      case 'get':
        console.log(JSON.stringify({ value: sys.lgetxattr(p, name).toString('hex') }))
        break
      case 'list':
        console.log(JSON.stringify({ names: sys.llistxattr(p) }))
        break
      case 'remove':
        sys.lremovexattr(p, name)
        console.log(JSON.stringify({ ok: true }))
        break
      default:
        console.error(`unknown op ${String(op)}`)
        process.exit(2)
    }
  } catch (err) {
    const code = (err as { code?: string }).code
    console.log(JSON.stringify({ error: code ?? String(err) }))
  }
}

main()
