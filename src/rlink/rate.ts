/**
 * `--bandwidth-limit` (VVR's bandwidth_limit): a token bucket over the bytes an RLINK writes to
 * its socket (after compression, TLS aside). Tokens accrue at the rate up to a burst of 50 ms of
 * it; a frame goes when the bucket is not in debt and may take it into debt, which the next frame
 * waits out. Over any window the bytes sent are at most rate × window + the burst + one frame, so
 * a sender that also keeps its frames to ~1/20 s of the rate (src/rlink/link.ts batches) stays
 * within a few percent over 10 s.
 */
import { ReplError } from '../errors'

export class RateLimiter {
  private tokens = 0
  private last = Date.now()
  constructor (private bytesPerSecond: number) {}

  get rate (): number { return this.bytesPerSecond }
  set rate (r: number) { this.refill(); this.bytesPerSecond = r; this.tokens = Math.min(this.tokens, this.burst) }

  private get burst (): number { return Math.max(4096, this.bytesPerSecond / 20) }

  private refill (): void {
    const now = Date.now()
    this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.bytesPerSecond / 1000)
    this.last = now
  }

  /** 0: send `bytes` now (they are taken); else the milliseconds to wait before asking again. */
  take (bytes: number): number {
    this.refill()
    if (this.tokens < 0) return Math.max(1, Math.ceil(-this.tokens * 1000 / this.bytesPerSecond))
    this.tokens -= bytes
    return 0
  }
}

/**
 * Parses a rate as VVR and rsync write it: bytes per second with K/M/G (×1024) suffixes and an
 * optional B or /s ("10M", "512K", "1.5G", "40MB/s"), or bits per second with a "bit" / "bps"
 * suffix ("100mbit", "1gbps": ×1000, as network people count); `none` or `0` for no limit (null).
 */
export function parseRate (text: string, what = '--bandwidth-limit'): number | null {
  const t = text.trim().toLowerCase()
  if (t === 'none' || t === 'off' || t === '0') return null
  const m = /^(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?b?)?|(b))?\s*(?:\/s|ps)?$/.exec(t)
  const bits = /^(\d+(?:\.\d+)?)\s*([kmgt])?(?:bit|bps|bit\/s)$/.exec(t)
  let rate: number
  if (bits !== null) {
    rate = Number(bits[1]) * (bits[2] === undefined ? 1 : 1000 ** ('kmgt'.indexOf(bits[2]) + 1)) / 8
  } else if (m !== null) {
    rate = Number(m[1]) * (m[2] === undefined ? 1 : 1024 ** ('kmgt'.indexOf(m[2]) + 1))
  } else {
    throw new ReplError('USAGE', `${what} ${text} is not a rate (bytes per second: 512K, 10M, 1G; or bits: 100mbit; none for no limit)`)
  }
  if (!Number.isFinite(rate) || rate < 1024) throw new ReplError('USAGE', `${what} ${text} is below 1K bytes per second (none: no limit)`)
  return Math.round(rate)
}

/** A rate for people: "10.0 MiB/s". */
export function formatRate (bytesPerSecond: number | null): string {
  if (bytesPerSecond === null) return 'none'
  const units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s']
  let v = bytesPerSecond
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`
}
