/**
 * A Primary's listener: where a Primary that was a Secondary (a takeover, src/daemon) goes on
 * listening at its old address. The peers that come are Primaries: the one it took over from, back
 * with its usual command, or another that thinks it is one. Each is authenticated as a Secondary
 * would (HELLO, CHALLENGE with our proof, AUTH with theirs), then refused, with the reason it must
 * act on: TAKEN_OVER (with our generation) when this host's generation continues the peer's, so the
 * peer stops taking writes (src/rlink/link.ts); PRIMARY otherwise. Nothing is replicated on those.
 *
 * The other peers are Secondaries that dial (wire 7: the host taken over, made a Secondary by
 * `replicafs failback`): their first frame is JOIN `name`, and the connection goes to the RLINK
 * `join:<name>` (src/rlink/link.ts offer), which runs the handshake over it as the Primary.
 */
import type { RlinkTls } from './tls'
import type net from 'node:net'
import { MsgType, PROTOCOL_VERSION, nonce, proof, proofOk, type Message, type RefuseCode } from '../format/wire'
import type { Generation } from '../format/state'
import { checkGeneration, takenOverAt, shortGeneration, splitBrain, checkPathList, type SplitBrain } from '../format/generation'
import { FramedSocket, HandshakeLimit, listen, type Address } from './common'
import { RLINK_HANDSHAKE_TIMEOUT_MS } from '../limits'

export interface GateConfig {
  listen: Address
  secret: Buffer
  /** TLS on the RLINK (src/rlink/tls.ts), or null: plain TCP. */
  tls?: RlinkTls | null
  rds: string
  /** This Primary's generation now. */
  generation: () => Generation
  /** Its last sequence number (what the CHALLENGE says it has). */
  lastSeq: () => number
  log: (line: string) => void
  /** The RLINK of a Secondary that dials as `name` (JOIN, a failed-back host), or null. */
  join?: (name: string) => { offer: (conn: FramedSocket) => void } | null
  /** The paths this Primary changed since it took over from generation `from` after record `at` (its RLINK's change map), or null: unknown. */
  changedSince?: (from: string, at: number) => Array<[string, boolean]> | null
  /** The Primary taken over (generation `from`) told what it changed after `at`: the split-brain, if both sides changed paths. */
  split?: (from: string, split: SplitBrain) => void
  /** A Primary whose generation continues ours (it took over from this host, by takeover or migrate) dialled us: this host stops writing. */
  takenOver?: (by: Generation, at: number, peer: string) => void
}

export class PrimaryGate {
  private server: net.Server | null = null
  private readonly all = new Set<FramedSocket>()
  private readonly limit: HandshakeLimit
  address = ''

  constructor (private readonly cfg: GateConfig) {
    this.limit = new HandshakeLimit(cfg.log)
  }

  async start (): Promise<void> {
    const { server, address } = await listen(this.cfg.listen, (sock) => this.accept(sock), this.cfg.log, this.cfg.tls ?? null, this.cfg.log,
      (raw, pending) => this.limit.admit(raw, this.all.size + pending))
    this.server = server
    this.address = address
  }

  private accept (sock: net.Socket): void {
    // Every connection here is in its handshake (each is refused, or handed to an RLINK, at its
    // end); admitted by listen (HandshakeLimit), counted in `all` from here.
    const cfg = this.cfg
    const ourNonce = nonce()
    let phase: 'hello' | 'auth' | 'split' = 'hello'
    let split: { at: number, ours: Array<[string, boolean]> | null } | null = null
    let hello: { nonce: Uint8Array, gen: Generation } | null = null
    const refuse = (code: RefuseCode, message: string, gen?: Generation): void => {
      clearTimeout(timer)
      cfg.log(`refused the connection from ${conn.peer}: ${message}`)
      if (gen === undefined) conn.refuse(code, message)
      else { conn.send({ t: MsgType.REFUSE, code, message, gen }); conn.end(message) }
    }
    const conn: FramedSocket = new FramedSocket(sock, (m: Message) => {
      if (phase === 'hello' && m.t === MsgType.JOIN) {
        // A Secondary that dials (src/rlink/receiver.ts): its RLINK takes the connection and
        // runs the handshake, speaking first, as it would over one it dialled.
        if (m.v !== PROTOCOL_VERSION) { refuse('VERSION', `protocol version ${String(m.v)} is not supported: this Primary speaks RLINK protocol version ${PROTOCOL_VERSION}`); return }
        if (m.rds !== cfg.rds) { refuse('RDS', `RDS name "${String(m.rds)}" does not match this Primary's RDS name "${cfg.rds}"`); return }
        if (typeof m.name !== 'string' || m.name.length === 0 || m.name.length > 128) { refuse('PROTOCOL', 'malformed JOIN'); return }
        const link = cfg.join?.(m.name) ?? null
        if (link === null) { refuse('PRIMARY', `this Primary has no RLINK for a Secondary that dials as ${m.name.slice(0, 8)} (only a host this Primary took over from joins it, by replicafs failback)`); return }
        clearTimeout(timer)
        this.all.delete(conn)
        link.offer(conn)
        return
      }
      if (phase === 'hello') {
        if (m.t !== MsgType.HELLO) { refuse('PRIMARY', 'this host is a Primary: it does not follow another Primary'); return }
        if (m.v !== PROTOCOL_VERSION) { refuse('VERSION', `protocol version ${String(m.v)} is not supported: this host speaks RLINK protocol version ${PROTOCOL_VERSION}`); return }
        if (m.rds !== cfg.rds) { refuse('RDS', `RDS name "${String(m.rds)}" does not match this host's RDS name "${cfg.rds}"`); return }
        const gen = checkGeneration(m.gen)
        if (!(m.nonce instanceof Uint8Array) || m.nonce.length !== 32 || gen === null) { refuse('PROTOCOL', 'malformed HELLO'); return }
        hello = { nonce: m.nonce, gen }
        const last = cfg.lastSeq()
        conn.send({
          t: MsgType.CHALLENGE, v: PROTOCOL_VERSION, rds: cfg.rds, nonce: ourNonce, proof: proof(cfg.secret, 'secondary', m.nonce, ourNonce, cfg.rds, conn.binding),
          next: last + 1, last: null, applied: last, fresh: false, empty: false, syncing: null, adopt: false
        })
        phase = 'auth'
        return
      }
      if (m.t === MsgType.REFUSE) { clearTimeout(timer); conn.end('refused by the peer'); return }
      if (phase === 'split') {
        // The taken-over Primary's paths changed after `at`: the conflicts, then the refusal.
        if (m.t !== MsgType.SPLIT) { refuse('PROTOCOL', `expected SPLIT, got message type ${m.t}`); return }
        const theirs = checkPathList(m.paths)
        if (theirs === undefined) { refuse('PROTOCOL', 'malformed SPLIT'); return }
        const s = split!
        cfg.split?.(hello!.gen.id, splitBrain(s.at, s.ours, theirs, conn.peer))
        const ours = cfg.generation()
        refuse('TAKEN_OVER', `generation ${shortGeneration(ours)} took over from its generation ${shortGeneration(hello!.gen)} after sequence number ${s.at}; its writes are refused until replicafs failback`, ours)
        return
      }
      if (m.t !== MsgType.AUTH || !(m.proof instanceof Uint8Array)) { refuse('PROTOCOL', `expected AUTH, got message type ${m.t}`); return }
      if (!proofOk(m.proof, proof(cfg.secret, 'primary', ourNonce, hello!.nonce, cfg.rds, conn.binding))) {
        refuse('AUTH', 'authentication failed: the peer does not know the shared secret (check --secret-file on both hosts)')
        return
      }
      const ours = cfg.generation()
      // The peer's generation continues ours: it took over from this host (a failed-back host
      // that then took over, a migrate back whose answer was lost). This host writes no more.
      const over = takenOverAt(hello!.gen, ours)
      if (over !== null) {
        cfg.takenOver?.(hello!.gen, over, conn.peer)
        refuse('PRIMARY', `this host was the Primary of generation ${shortGeneration(ours)}, which the peer's generation ${shortGeneration(hello!.gen)} took over after sequence number ${over}: it takes no more writes, and replicafs failback makes it the peer's Secondary`)
        return
      }
      const at = takenOverAt(ours, hello!.gen)
      if (at !== null) {
        // First each side's paths changed since (SPLIT, wire 7), so that both can list a
        // split-brain's conflicts; the refusal follows the peer's answer.
        const mine = cfg.changedSince?.(hello!.gen.id, at) ?? null
        split = { at, ours: mine }
        conn.send({ t: MsgType.SPLIT, gen: ours, at, paths: mine })
        phase = 'split'
      } else if (hello!.gen.id === ours.id) {
        refuse('PRIMARY', `both hosts are Primaries of generation ${shortGeneration(ours)} (split-brain): neither replicates until one of them is failed back`)
      } else {
        refuse('PRIMARY', `this host is a Primary (generation ${shortGeneration(ours)}) and the peer's generation ${shortGeneration(hello!.gen)} is not one it took over from`)
      }
    }, () => { clearTimeout(timer); this.all.delete(conn) })
    const timer = setTimeout(() => refuse('PROTOCOL', `handshake not completed within ${RLINK_HANDSHAKE_TIMEOUT_MS / 1000} s`), RLINK_HANDSHAKE_TIMEOUT_MS)
    timer.unref()
    this.all.add(conn)
  }

  async close (): Promise<void> {
    for (const c of this.all) c.end('the Primary is stopping')
    this.all.clear()
    const server = this.server
    this.server = null
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
