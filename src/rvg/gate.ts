/**
 * The gate of PrimaryRvg.exclusive(): a record boundary with nothing in flight and no change
 * starting until the holder is done (a snapshot is taken there). While it is closed, changes wait
 * before they are appended; the holder's own changes (a restore journals its records) pass with
 * its token.
 */
import type { ExclusiveToken } from './interfaces'

export class ExclusiveGate {
  /** Set while exclusive() runs; resolves when it ends. The write path checks it first (cheap). */
  closed: Promise<void> | null = null
  private owner: ExclusiveToken | null = null

  /** Closes the gate (after any holder before us), drains, runs `fn` with the token, opens it again. */
  async run<T> (drain: () => Promise<void>, fn: (own: ExclusiveToken) => Promise<T>): Promise<T> {
    while (this.closed !== null) await this.closed
    let open!: () => void
    this.closed = new Promise<void>((resolve) => { open = resolve })
    const token: ExclusiveToken = {}
    this.owner = token
    try {
      await drain()
      return await fn(token)
    } finally {
      this.closed = null
      this.owner = null
      open()
    }
  }

  /** Whether the gate is held by someone other than the holder of `token`. */
  shut (token?: ExclusiveToken): boolean {
    return this.closed !== null && (token === undefined || token !== this.owner)
  }

  /** Whether `token` is the holder's. */
  isOwner (token?: ExclusiveToken): boolean {
    return token !== undefined && token === this.owner
  }

  /** Waits until the gate lets the holder of `token` (or anyone, without one) through. */
  async pass (token?: ExclusiveToken): Promise<void> {
    while (this.shut(token)) await this.closed
  }
}
