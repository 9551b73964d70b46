import type { Stores } from '../store/stores.js'
import { toRevocationEvent } from './feed.js'

/** One event as a stream sends it: its id and its JSON, serialised once for every subscriber. */
export interface QueuedEvent {
  id: number
  data: string
}

/** What a subscriber waits for: new events queued, a heartbeat's time, too many queued (it must reconnect), the broker closing. */
export type FeedWake = 'events' | 'timeout' | 'overflow' | 'closed'

export interface FeedSubscription {
  /** Resolves once events are queued (at once if some already are), or after `timeoutMs`. */
  next(timeoutMs: number): Promise<FeedWake>
  /** The events queued so far, oldest first; the queue is emptied. */
  take(): QueuedEvent[]
  close(): void
}

export interface FeedHub {
  /**
   * Registers a stream for `audience` (a resource URI). From then on every event committed for
   * that audience is queued for it; what was committed before, the stream reads itself (its
   * catch-up from its cursor), and drops the events it finds queued twice by id.
   */
  subscribe(audience: string): FeedSubscription
  readonly subscribers: number
  /** Ends every subscription ('closed'): the database is closing. */
  close(): void
}

/**
 * The revocation feed's fan-out: each new event is read from the database once, by the hub, and
 * queued for every stream of its audiences — not read once per stream. A stream that falls
 * behind (its socket slow, its queue past `maxQueued`) is told 'overflow' and ends, so it
 * reconnects from its cursor; it never holds the others up, since the hub only appends to queues.
 * The hub listens to the store (this process's commits at once, other processes' through the
 * store's head poll) only while some stream is subscribed.
 */
export function createFeedHub(stores: Pick<Stores, 'revocations'>, opts: { page: number; maxQueued: number }): FeedHub {
  type Sub = { audience: string; queue: QueuedEvent[]; overflowed: boolean; closed: boolean; wake: ((w: FeedWake) => void) | undefined }
  const byAudience = new Map<string, Set<Sub>>()
  let count = 0
  let cursor = 0
  // The head read when the first stream subscribed: the hub reads what comes after it.
  let started: Promise<void> = Promise.resolve()
  let unsubscribe: (() => void) | undefined
  let pumpScheduled = false
  let closed = false

  function wakeUp(sub: Sub, why: FeedWake) {
    const wake = sub.wake
    sub.wake = undefined
    wake?.(why)
  }

  // One page per turn of the event loop: between pages the streams write what they were given,
  // so only a stream that stays behind across turns fills its queue.
  async function pump() {
    pumpScheduled = false
    if (closed || count === 0) return
    let rows
    try {
      await started
      rows = await stores.revocations.listAll(cursor, opts.page)
    } catch {
      // The database is closing, or momentarily locked: the next notification reads on.
      return
    }
    const touched = new Set<Sub>()
    for (const row of rows) {
      let queued: QueuedEvent | undefined
      for (const audience of row.audiences.split(' ')) {
        for (const sub of byAudience.get(audience) ?? []) {
          if (sub.overflowed) continue
          queued ??= { id: row.id, data: JSON.stringify(toRevocationEvent(row)) }
          sub.queue.push(queued)
          if (sub.queue.length > opts.maxQueued) {
            sub.overflowed = true
            sub.queue = []
          }
          touched.add(sub)
        }
      }
      cursor = row.id
    }
    for (const sub of touched) wakeUp(sub, sub.overflowed ? 'overflow' : 'events')
    if (rows.length === opts.page) schedulePump()
  }

  function schedulePump() {
    if (pumpScheduled) return
    pumpScheduled = true
    setImmediate(pump)
  }

  function remove(sub: Sub) {
    if (sub.closed) return
    sub.closed = true
    const set = byAudience.get(sub.audience)
    set?.delete(sub)
    if (set?.size === 0) byAudience.delete(sub.audience)
    if (--count === 0) {
      unsubscribe?.()
      unsubscribe = undefined
    }
  }

  return {
    subscribe(audience) {
      const sub: Sub = { audience, queue: [], overflowed: false, closed: closed, wake: undefined }
      if (!closed) {
        if (count++ === 0) {
          // Everything before now is each stream's own catch-up; the hub reads what comes after.
          started = stores.revocations.head().then(
            (head) => void (cursor = head),
            () => undefined, // the database is closing: nothing will be read
          )
          unsubscribe = stores.revocations.subscribe(schedulePump)
        }
        const set = byAudience.get(audience) ?? new Set<Sub>()
        set.add(sub)
        byAudience.set(audience, set)
      }
      return {
        next(timeoutMs) {
          if (sub.closed) return Promise.resolve('closed')
          if (sub.overflowed) return Promise.resolve('overflow')
          if (sub.queue.length > 0) return Promise.resolve('events')
          return new Promise<FeedWake>((resolve) => {
            const timer = setTimeout(() => {
              sub.wake = undefined
              resolve('timeout')
            }, timeoutMs)
            sub.wake = (why) => {
              clearTimeout(timer)
              resolve(why)
            }
          })
        },
        take() {
          const out = sub.queue
          sub.queue = []
          return out
        },
        close() {
          remove(sub)
          wakeUp(sub, 'closed')
        },
      }
    },
    get subscribers() {
      return count
    },
    close() {
      closed = true
      for (const set of [...byAudience.values()]) {
        for (const sub of [...set]) {
          remove(sub)
          wakeUp(sub, 'closed')
        }
      }
    },
  }
}
