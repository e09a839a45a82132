/**
 * A TCP proxy the test controls, in-process, to put between a Primary and its Secondary
 * (startPair({ via })). It forwards bytes in both directions, in order, and lets the test:
 *  - delay(ms): hold every chunk `ms` before forwarding it (both directions, order preserved);
 *  - stall()/unstall(): stop forwarding in both directions (what arrives is buffered), then resume;
 *    stallAfterUp/Down(bytes): stall by itself once that many more bytes went that way;
 *  - cut(): destroy every current connection abruptly; a connection with bytes pending is cut
 *    after forwarding only part of its next chunk, so the peer sees a torn frame;
 *  - refuse(true): close new connections at once;
 *  - close(): stop listening and destroy everything.
 * Byte counters per direction let a test wait for "some bytes flowed". Every proxy is registered
 * in this module: closeAllProxies() (each file's after hook, and test finally blocks) closes them,
 * so a failing test never leaves one listening.
 */
import * as net from 'net'

export interface ProxyCounters {
  /** Bytes received from the client side (the Primary) and forwarded to the target. */
  up: number
  /** Bytes received from the target (the Secondary) and forwarded to the client. */
  down: number
  /** Bytes received (not necessarily forwarded yet), per direction. */
  upReceived: number
  downReceived: number
}

export interface Proxy {
  /** 127.0.0.1:PORT to give the Primary. */
  address: string
  /** The address it forwards to. */
  target: string
  /** Connections accepted so far (refused ones included). */
  readonly accepted: number
  /** Connections accepted and forwarded (not refused) so far. */
  readonly forwarded: number
  /** Connections open now. */
  readonly open: number
  /** Bytes forwarded / received per direction, over all connections. */
  readonly bytes: ProxyCounters
  /** Cuts done so far, and how many of them tore a chunk (forwarded part of it). */
  readonly cuts: { total: number, torn: number }
  /** What happened to each connection (accepted, which side ended it, cuts), with times: for failure messages. */
  readonly events: string[]
  /** The first 64 MiB that went up (Primary to Secondary), over all connections: what a wiretap sees. */
  upBytes(): Buffer
  delay(ms: number): void
  stall(): void
  /** Stalls by itself once `bytes` more have been forwarded up (exactly there, between two chunks). */
  stallAfterUp(bytes: number): void
  /** Stalls once `bytes` more have gone down (to the side that connected). */
  stallAfterDown(bytes: number): void
  unstall(): void
  readonly stalled: boolean
  /** Destroys every current connection; returns how many there were. */
  cut(): number
  refuse(on: boolean): void
  close(): Promise<void>
}

interface Pipe {
  from: net.Socket
  to: net.Socket
  queue: Array<{ chunk: Buffer, due: number }>
  timer: NodeJS.Timeout | undefined
  dir: 'up' | 'down'
}

interface Conn {
  id: number
  client: net.Socket
  server: net.Socket
  up: Pipe
  down: Pipe
  dead: boolean
}

const live = new Set<Proxy>()

/**
 * Closes every proxy still open. Call it from each file's after hook and from test finally blocks
 * (the proxy lives in the test process, so the runner exiting also ends it).
 */
/** Proxies started and not closed yet. */
export function liveProxies (): Proxy[] {
  return [...live]
}

export async function closeAllProxies (): Promise<void> {
  await Promise.all([...live].map(async (p) => await p.close()))
}

function parseHostPort (s: string): { host: string, port: number } {
  const i = s.lastIndexOf(':')
  if (i <= 0) throw new Error(`proxy target ${s} is not HOST:PORT`)
  const host = s.slice(0, i).replace(/^\[|\]$/g, '')
  const port = Number(s.slice(i + 1))
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`proxy target ${s} has a bad port`)
  return { host, port }
}

export async function startProxy (target: string): Promise<Proxy> {
  const { host, port } = parseHostPort(target)
  const conns = new Set<Conn>()
  const counters: ProxyCounters = { up: 0, down: 0, upReceived: 0, downReceived: 0 }
  const cuts = { total: 0, torn: 0 }
  let delayMs = 0
  let stalled = false
  /** counters.up at which to stall (stallAfterUp), or null. */
  let stallAt: number | null = null
  /** counters.down at which to stall (stallAfterDown), or null. */
  let stallDownAt: number | null = null
  let refusing = false
  let closed = false
  let accepted = 0
  let forwarded = 0
  const events: string[] = []
  const upSeen: Buffer[] = []
  let upSeenBytes = 0
  const t0 = Date.now()
  const ev = (id: number, what: string): void => {
    events.push(`${new Date().toISOString()} +${Date.now() - t0}ms conn ${id}: ${what}`)
    if (events.length > 500) events.splice(0, events.length - 500)
  }

  /** Stops forwarding on `c` and forgets it, without touching its sockets. */
  const retire = (c: Conn): void => {
    c.dead = true
    for (const p of [c.up, c.down]) {
      clearTimeout(p.timer)
      p.timer = undefined
      p.queue = []
    }
    conns.delete(c)
  }

  const kill = (c: Conn): void => {
    if (!c.dead) retire(c)
    c.client.destroy()
    c.server.destroy()
  }

  const pump = (c: Conn, p: Pipe): void => {
    if (c.dead || p.timer !== undefined) return
    while (!stalled && p.queue.length > 0) {
      const head = p.queue[0]
      const wait = head.due - Date.now()
      if (wait > 0) {
        p.timer = setTimeout(() => { p.timer = undefined; pump(c, p) }, wait)
        return
      }
      p.queue.shift()
      if (p.dir === 'up') counters.up += head.chunk.length
      else counters.down += head.chunk.length
      p.to.write(head.chunk)
      if (stallAt !== null && counters.up >= stallAt) { stallAt = null; stalled = true; ev(c.id, `stall after ${counters.up} bytes up`) }
      if (stallDownAt !== null && counters.down >= stallDownAt) { stallDownAt = null; stalled = true; ev(c.id, `stall after ${counters.down} bytes down`) }
    }
  }

  const makePipe = (from: net.Socket, to: net.Socket, dir: 'up' | 'down'): Pipe => ({ from, to, queue: [], timer: undefined, dir })

  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    accepted++
    sockets.add(client)
    client.on('close', () => sockets.delete(client))
    client.on('error', () => { /* reported by close */ })
    if (refusing || closed) {
      client.destroy()
      return
    }
    forwarded++
    const id = accepted
    ev(id, `accepted from ${String(client.remotePort)}`)
    client.pause()
    const upstream = net.connect({ host, port })
    sockets.add(upstream)
    upstream.on('close', () => sockets.delete(upstream))
    upstream.on('error', () => { /* reported by close */ })
    const c: Conn = { id, client, server: upstream, up: makePipe(client, upstream, 'up'), down: makePipe(upstream, client, 'down'), dead: false }
    conns.add(c)
    const onData = (p: Pipe) => (chunk: Buffer): void => {
      if (c.dead) return
      if (p.dir === 'up') counters.upReceived += chunk.length
      if (p.dir === 'up' && upSeenBytes < 64 * 1024 * 1024) { upSeen.push(Buffer.from(chunk)); upSeenBytes += chunk.length }
      else counters.downReceived += chunk.length
      const last = p.queue.length > 0 ? p.queue[p.queue.length - 1].due : 0
      p.queue.push({ chunk: Buffer.from(chunk), due: Math.max(Date.now() + delayMs, last) })
      pump(c, p)
    }
    upstream.on('connect', () => {
      if (c.dead) return
      client.on('data', onData(c.up))
      upstream.on('data', onData(c.down))
      client.resume()
    })
    // A half-close or an error on either side ends the whole connection: the RLINK has no use
    // for half-open sockets, and an abrupt end is what the peer must handle anyway.
    const end = (side: string) => (): void => {
      if (c.dead) return
      ev(id, `${side}${stalled ? ' while stalled' : ''}; ending the connection (queued up ${c.up.queue.length}, down ${c.down.queue.length} chunks)`)
      if (stalled) {
        // bytes still held: they die with the connection, as on a real network failure
        kill(c)
        return
      }
      // forward what is held (a peer's last words, e.g. a REFUSE, must arrive), then end both
      for (const p of [c.up, c.down]) {
        for (const { chunk } of p.queue) {
          if (p.dir === 'up') counters.up += chunk.length
          else counters.down += chunk.length
          if (!p.to.destroyed) p.to.write(chunk)
        }
      }
      retire(c)
      client.end()
      upstream.end()
      setTimeout(() => { client.destroy(); upstream.destroy() }, 1000).unref()
    }
    client.on('close', end('client closed'))
    upstream.on('close', end('target closed'))
    client.on('end', end('client ended'))
    upstream.on('end', end('target ended'))
    client.on('error', (e) => ev(id, `client error ${e.message}`))
    upstream.on('error', (e) => ev(id, `target error ${e.message}`))
  })
  server.on('error', () => { /* listen errors surface from listen() below */ })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  const addr = server.address() as net.AddressInfo

  const proxy: Proxy = {
    address: `127.0.0.1:${addr.port}`,
    target,
    get accepted () { return accepted },
    get forwarded () { return forwarded },
    get open () { return conns.size },
    get bytes () { return { ...counters } },
    get cuts () { return { ...cuts } },
    get stalled () { return stalled },
    get events () { return [...events] },
    upBytes () { return Buffer.concat(upSeen) },
    delay (ms: number) {
      if (!(ms >= 0)) throw new Error(`proxy delay ${ms} is not a non-negative number`)
      delayMs = ms
    },
    stall () { stalled = true; ev(0, 'stall') },
    stallAfterUp (bytes: number) { stallAt = counters.up + bytes },
    stallAfterDown (bytes: number) { stallDownAt = counters.down + bytes },
    unstall () {
      stalled = false
      ev(0, 'unstall')
      for (const c of conns) { pump(c, c.up); pump(c, c.down) }
    },
    cut () {
      const n = conns.size
      for (const c of [...conns]) {
        cuts.total++
        // Tear the next pending chunk: forward its first part only, then destroy both sockets.
        const p = c.up.queue.length > 0 ? c.up : c.down.queue.length > 0 ? c.down : undefined
        const head = p?.queue[0].chunk
        if (p === undefined || head === undefined || head.length < 2) {
          ev(c.id, 'cut (nothing held)')
          kill(c)
          continue
        }
        const part = head.subarray(0, Math.floor(head.length / 2))
        ev(c.id, `cut, tearing a ${head.length}-byte chunk ${p.dir} after ${part.length} bytes`)
        retire(c) // nothing more is forwarded on c; data handlers drop what still arrives
        if (p.dir === 'up') counters.up += part.length
        else counters.down += part.length
        cuts.torn++
        p.to.write(part, () => kill(c))
        setTimeout(() => kill(c), 200).unref() // in case that write never completes
      }
      return n
    },
    refuse (on: boolean) { refusing = on },
    async close () {
      if (closed) return
      closed = true
      live.delete(proxy)
      for (const c of [...conns]) kill(c)
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  live.add(proxy)
  return proxy
}
