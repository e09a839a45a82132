/**
 * `--metrics HOST:PORT`: Prometheus text at `/metrics` (prom-client), on a Primary and on a
 * Secondary. Every scrape reads the daemon's `status` (the same object the control socket answers,
 * so whichever role the daemon has now, across a migrate or failback) and sets the gauges from it:
 * nothing in the write path counts for the metrics. Names are in the `replicafs_` namespace and
 * listed in the README ("Metrics").
 *
 * Sequence numbers only grow, so `rate(replicafs_srl_newest_seq[1m])` is updates logged per second
 * and `rate(replicafs_rlink_data_acked_seq[1m])` updates applied per second on each Secondary.
 */
import http from 'node:http'
import type { Registry, Gauge } from 'prom-client'

/** What a scrape reads: the daemon's status (src/daemon: primaryStatus, secondaryStatus). */
export type StatusSource = () => Promise<unknown>
/** The snapshots and the space each takes (`snapshot list`); read only by a scrape (it walks them). */
export type SnapshotSource = () => Promise<Array<{ name: string, bytes: number, valid: boolean }>>

interface Srl { records: number, bytes: number, capacityBytes: number, oldestSeq: number | null, newestSeq: number | null, appliedSeq: number }
interface Rlink {
  secondary: string, state: string, sentSeq: number, networkAckedSeq: number, dataAckedSeq: number,
  lagUpdates: number, lagBytes: number, lagSeconds: number, consistent?: boolean,
  transport?: { tls: boolean, compress: string, bytesOut: number, bytesRaw: number } | null
  bandwidthLimit?: number | null
  sync?: { entries: number, bytes: number, totalEntries?: number | null, totalBytes?: number | null } | null
}
interface Status {
  role: string
  srl: Srl | null
  rlinks?: Rlink[]
  receivedSeq?: number
  appliedSeq?: number
  connected?: boolean
  consistent?: boolean
  ibc?: { frozen?: boolean | string | null, registrations?: unknown[] } | null
  fatal?: string | null
  errors?: Record<string, number>
  verify?: Array<{ secondary: string, entries: number, bytes: number, theirEntries: number, differing: number }> | { entries: number, bytes: number } | null
  transport?: { tls: boolean, compress: string, bytesIn: number } | null
  fuse?: { transport: string, passthrough: boolean, openFiles: number, forwarded?: { count: number, resolveSeconds: number, queueSeconds: number, handleSeconds: number }, logSyncs?: number } | null
}

export const RLINK_STATES = ['connecting', 'connected', 'disconnected', 'paused'] as const

export class Metrics {
  private readonly registry: Registry
  private readonly g: Record<string, Gauge>

  constructor (private readonly status: StatusSource, private readonly snapshots: SnapshotSource | null = null) {
    // Loaded here, not at the top: only a daemon started with --metrics pays for it.
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const prom = require('prom-client') as typeof import('prom-client')
    this.registry = new prom.Registry()
    const gauge = (name: string, help: string, labelNames: string[] = []): Gauge => new prom.Gauge({ name: `replicafs_${name}`, help, labelNames, registers: [this.registry] })
    this.g = {
      up: gauge('up', '1 while the daemon answers; role: primary, secondary or passthrough', ['role']),
      fatal: gauge('fatal', '1 when the daemon refuses changes after a fatal error (status.fatal)'),
      srlRecords: gauge('srl_records', 'records retained in the SRL'),
      srlBytes: gauge('srl_bytes', 'bytes of the SRL\'s ring the retained records take'),
      srlCapacity: gauge('srl_capacity_bytes', 'the SRL ring\'s size'),
      srlOldest: gauge('srl_oldest_seq', 'sequence number of the oldest retained record'),
      srlNewest: gauge('srl_newest_seq', 'sequence number of the newest record logged (rate(): updates logged per second)'),
      srlApplied: gauge('srl_applied_seq', 'last sequence number applied to the data directory'),
      rlinkState: gauge('rlink_state', '1 for the RLINK\'s state now, 0 for the others', ['secondary', 'state']),
      rlinkSent: gauge('rlink_sent_seq', 'last sequence number sent on the RLINK', ['secondary']),
      rlinkNetAcked: gauge('rlink_network_acked_seq', 'last sequence number the Secondary logged (network ack)', ['secondary']),
      rlinkDataAcked: gauge('rlink_data_acked_seq', 'last sequence number the Secondary applied (data ack)', ['secondary']),
      rlinkLagUpdates: gauge('rlink_lag_updates', 'SRL records not yet data-acked by the Secondary', ['secondary']),
      rlinkLagBytes: gauge('rlink_lag_bytes', 'SRL bytes not yet data-acked by the Secondary', ['secondary']),
      rlinkLagSeconds: gauge('rlink_lag_seconds', 'age of the oldest record the Secondary has not data-acked (0 when caught up)', ['secondary']),
      rlinkConsistent: gauge('rlink_consistent', '0 while the Secondary is synchronizing or on a change map (DCM), else 1', ['secondary']),
      syncEntries: gauge('sync_entries', 'entries sent by the synchronization running on the RLINK', ['secondary']),
      syncBytes: gauge('sync_bytes', 'bytes sent by the synchronization running on the RLINK', ['secondary']),
      syncTotalBytes: gauge('sync_total_bytes', 'the tree\'s bytes, once the Primary counted them, for the synchronization running', ['secondary']),
      received: gauge('secondary_received_seq', 'a Secondary: last sequence number logged in its SRL'),
      applied: gauge('secondary_applied_seq', 'a Secondary: last sequence number applied to its data directory'),
      connected: gauge('secondary_connected', 'a Secondary: 1 while its Primary is connected'),
      consistent: gauge('secondary_consistent', 'a Secondary: 1 when its tree is a consistent copy (not synchronizing)'),
      ibcFrozen: gauge('ibc_frozen', 'a Secondary: 1 while an IBC message holds it frozen'),
      ibcRegistrations: gauge('ibc_registrations', 'IBC applications registered on this host'),
      rlinkBytesSent: gauge('rlink_bytes_sent', 'bytes the connection now up wrote to the socket, after compression (rate(): the RLINK\'s throughput)', ['secondary']),
      rlinkBytesFrames: gauge('rlink_bytes_frames', 'bytes of frames the connection now up sent, before compression', ['secondary']),
      rlinkTls: gauge('rlink_tls', '1 while the RLINK\'s connection is TLS', ['secondary']),
      rlinkLimit: gauge('rlink_bandwidth_limit_bytes', '--bandwidth-limit of the RLINK, bytes per second (absent: none)', ['secondary']),
      bytesIn: gauge('secondary_bytes_received', 'a Secondary: bytes read from its Primary\'s connection now up (after compression)'),
      tls: gauge('secondary_tls', 'a Secondary: 1 while its Primary\'s connection is TLS'),
      verifyEntries: gauge('verify_entries', 'entries the online verify running has walked on this host', ['secondary']),
      verifyBytes: gauge('verify_bytes', 'bytes the online verify running has hashed on this host', ['secondary']),
      verifyDiffering: gauge('verify_differing_paths', 'paths the online verify running found different so far', ['secondary']),
      snapshots: gauge('snapshots', 'snapshots on this host (valid ones)'),
      snapshotBytes: gauge('snapshot_bytes', 'space the snapshots\' own items take, bytes', ['snapshot']),
      mountOpen: gauge('mount_open_files', 'files and directories open through the mount now', ['transport']),
      mountForwarded: gauge('mount_forwarded_requests', 'requests the mount handed to the daemon\'s JavaScript thread since it was mounted (ll transport; a counter: rate() for requests per second)', ['transport']),
      mountForwardedSeconds: gauge('mount_forwarded_seconds', 'seconds those requests spent, summed, by step: resolve (their paths, on a libfuse worker), queue (waiting for the JavaScript thread), handle (until the answer); divide a rate() by the requests\' rate() for a mean', ['transport', 'step']),
      mountLogSyncs: gauge('mount_log_syncs', 'fsyncs the Primary\'s mount answered itself, with an fdatasync of the SRL on a libfuse worker, since it was mounted (ll transport; a counter)', ['transport']),
      mountPassthrough: gauge('mount_passthrough', '1 when the kernel reads files opened through the mount from the data directory itself (FUSE passthrough)', ['transport']),
      errors: gauge('errors_total', 'errors by code since the daemon started: operating errors answered through the mount or the control socket, RLINK refusals sent (REFUSED_<code>), and EIO, ENOSPC, EDQUOT, EROFS from the data directory\'s filesystem', ['code'])
    }
  }

  /** The Prometheus text of the daemon as it is now. */
  async text (): Promise<string> {
    this.registry.resetMetrics()
    const s = await this.status() as Status
    const g = this.g
    g.up.set({ role: s.role }, 1)
    g.fatal.set(s.fatal !== null && s.fatal !== undefined ? 1 : 0)
    if (s.srl !== null) {
      g.srlRecords.set(s.srl.records)
      g.srlBytes.set(s.srl.bytes)
      g.srlCapacity.set(s.srl.capacityBytes)
      if (s.srl.oldestSeq !== null) g.srlOldest.set(s.srl.oldestSeq)
      g.srlNewest.set(s.srl.newestSeq ?? s.srl.appliedSeq)
      g.srlApplied.set(s.srl.appliedSeq)
    }
    for (const l of s.rlinks ?? []) {
      const secondary = l.secondary
      for (const st of RLINK_STATES) g.rlinkState.set({ secondary, state: st }, l.state === st ? 1 : 0)
      g.rlinkSent.set({ secondary }, l.sentSeq)
      g.rlinkNetAcked.set({ secondary }, l.networkAckedSeq)
      g.rlinkDataAcked.set({ secondary }, l.dataAckedSeq)
      g.rlinkLagUpdates.set({ secondary }, l.lagUpdates)
      g.rlinkLagBytes.set({ secondary }, l.lagBytes)
      g.rlinkLagSeconds.set({ secondary }, l.lagSeconds)
      g.rlinkConsistent.set({ secondary }, l.consistent === false ? 0 : 1)
      if (l.transport != null) {
        g.rlinkBytesSent.set({ secondary }, l.transport.bytesOut)
        g.rlinkBytesFrames.set({ secondary }, l.transport.bytesRaw)
        g.rlinkTls.set({ secondary }, l.transport.tls ? 1 : 0)
      }
      if (typeof l.bandwidthLimit === 'number') g.rlinkLimit.set({ secondary }, l.bandwidthLimit)
      if (l.sync !== null && l.sync !== undefined) {
        g.syncEntries.set({ secondary }, l.sync.entries)
        g.syncBytes.set({ secondary }, l.sync.bytes)
        if (typeof l.sync.totalBytes === 'number') g.syncTotalBytes.set({ secondary }, l.sync.totalBytes)
      }
    }
    if (s.rlinks === undefined && s.role === 'secondary') {
      g.received.set(s.receivedSeq ?? 0)
      g.applied.set(s.appliedSeq ?? 0)
      g.connected.set(s.connected === true ? 1 : 0)
      g.consistent.set(s.consistent === false ? 0 : 1)
      g.ibcFrozen.set(s.ibc?.frozen !== undefined && s.ibc.frozen !== null && s.ibc.frozen !== false ? 1 : 0)
      if (s.transport != null) {
        g.bytesIn.set(s.transport.bytesIn)
        g.tls.set(s.transport.tls ? 1 : 0)
      }
    }
    if (s.fuse != null) {
      g.mountOpen.set({ transport: s.fuse.transport }, s.fuse.openFiles)
      g.mountPassthrough.set({ transport: s.fuse.transport }, s.fuse.passthrough ? 1 : 0)
      const f = s.fuse.forwarded
      if (f !== undefined) {
        g.mountForwarded.set({ transport: s.fuse.transport }, f.count)
        g.mountForwardedSeconds.set({ transport: s.fuse.transport, step: 'resolve' }, f.resolveSeconds)
        g.mountForwardedSeconds.set({ transport: s.fuse.transport, step: 'queue' }, f.queueSeconds)
        g.mountForwardedSeconds.set({ transport: s.fuse.transport, step: 'handle' }, f.handleSeconds)
      }
      if (s.fuse.logSyncs !== undefined) g.mountLogSyncs.set({ transport: s.fuse.transport }, s.fuse.logSyncs)
    }
    for (const [code, n] of Object.entries(s.errors ?? {})) g.errors.set({ code }, n)
    // A Primary's verifies (one per RLINK), or the one a Secondary is walking for its Primary.
    const verifies = Array.isArray(s.verify) ? s.verify : s.verify != null ? [{ secondary: '', ...s.verify, differing: undefined }] : []
    for (const v of verifies) {
      g.verifyEntries.set({ secondary: v.secondary }, v.entries)
      g.verifyBytes.set({ secondary: v.secondary }, v.bytes)
      if (typeof v.differing === 'number') g.verifyDiffering.set({ secondary: v.secondary }, v.differing)
    }
    if (this.snapshots !== null && s.role !== 'passthrough') {
      try {
        const list = await this.snapshots()
        g.snapshots.set(list.filter((x) => x.valid).length)
        for (const x of list) g.snapshotBytes.set({ snapshot: x.name }, x.bytes)
      } catch {} // a daemon between roles, or without snapshots: no figures this time
    }
    if (s.ibc !== null && s.ibc !== undefined && Array.isArray(s.ibc.registrations)) g.ibcRegistrations.set(s.ibc.registrations.length)
    return await this.registry.metrics()
  }

  get contentType (): string { return this.registry.contentType }
}

/** Serves `metrics` at http://HOST:PORT/metrics; resolves to the server and the address it listens on. */
export async function serveMetrics (host: string, port: number, metrics: Metrics, log: (line: string) => void): Promise<{ server: http.Server, address: string }> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('replicafs serves /metrics only\n')
      return
    }
    metrics.text().then((body) => {
      res.writeHead(200, { 'content-type': metrics.contentType }).end(body)
    }, (err: Error) => {
      res.writeHead(503, { 'content-type': 'text/plain' }).end(`replicafs: ${err.message}\n`)
    })
  })
  server.headersTimeout = 10_000
  server.requestTimeout = 10_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => { server.off('error', reject); resolve() })
  })
  server.on('error', (err) => log(`metrics: ${err.message}`))
  const a = server.address() as { address: string, port: number }
  return { server, address: `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` }
}
