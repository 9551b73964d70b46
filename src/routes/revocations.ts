import { Hono } from 'hono'
import { streamSSE } from 'hono/streaming'
import type { Deps } from '../broker.js'
import { invalidRequest } from '../errors.js'
import { identify, resourceCallerId } from '../http/access-log.js'
import { remoteAddress } from '../http/rate-limit.js'
import { noStore } from '../http/middleware.js'
import { feedPosition, parseCursor, readEvents } from '../revocations/feed.js'

const PAGE = 500
const HEARTBEAT_MS = 15_000

/**
 * GET /revocations — the revocation feed for registered resources (HTTP Basic, the introspection
 * credential). Poll with `?after=<cursor>`; or ask for `text/event-stream` and receive every
 * event after `Last-Event-ID` (or `after`) as it is committed, with a heartbeat comment; a stream
 * that falls more than `FEED_LIMITS.maxQueued` events behind gets `overflow` and ends. Both
 * forms carry the feed's epoch and head (see {@link feedPosition}) so a verifier notices a
 * database that was replaced or restored.
 */
export function revocationRoutes(deps: Deps) {
  return new Hono().get('/revocations', noStore(), async (c) => {
    const resource = await deps.clients.authenticateResource(c.req.header('authorization'), remoteAddress(c))
    identify(c, resourceCallerId(resource))
    const wantsStream = (c.req.header('accept') ?? '').includes('text/event-stream')
    const after = parseCursor(wantsStream ? (c.req.header('last-event-id') ?? c.req.query('after')) : c.req.query('after'))
    if (after === undefined) throw invalidRequest('the cursor must be a non-negative integer')

    if (!wantsStream) {
      const limitText = c.req.query('limit') ?? String(PAGE)
      if (!/^[0-9]{1,4}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > 1000) throw invalidRequest('"limit" must be an integer from 1 to 1000')
      const events = await readEvents(deps.stores, after, Number(limitText), resource.uri)
      deps.metrics.feedEvents.inc({ mode: 'poll' }, events.length)
      return c.json({ events, cursor: events.at(-1)?.id ?? String(after), ...(await feedPosition(deps.stores)) })
    }

    return streamSSE(c, async (stream) => {
      let cursor = after
      // Registered before the catch-up reads, so nothing committed meanwhile falls between them.
      const live = deps.feedHub.subscribe(resource.uri)
      deps.metrics.feedSubscribers.inc()
      stream.onAbort(() => live.close())
      try {
        await stream.writeSSE({ event: 'ready', data: JSON.stringify({ cursor: String(cursor), ...(await feedPosition(deps.stores)) }), retry: 1000 })
        // Catch-up: what was committed before this stream joined, read for it alone.
        for (;;) {
          const events = await readEvents(deps.stores, cursor, PAGE, resource.uri)
          for (const e of events) {
            await stream.writeSSE({ id: e.id, event: 'revocation', data: JSON.stringify(e) })
            deps.metrics.feedEvents.inc({ mode: 'stream' })
          }
          if (events.length > 0) cursor = Number(events.at(-1)!.id)
          if (events.length < PAGE || stream.aborted) break
        }
        // Live: the hub's queue, read once for all streams; ids at or before the cursor were sent already.
        while (!stream.aborted) {
          const why = await live.next(HEARTBEAT_MS)
          if (why === 'closed') break
          if (why === 'timeout') {
            await stream.write(': heartbeat\n\n')
            continue
          }
          if (why === 'overflow') {
            // Too far behind: end, so the client reconnects from its cursor (Last-Event-ID) and catches up.
            await stream.writeSSE({ event: 'overflow', data: JSON.stringify({ cursor: String(cursor) }) })
            break
          }
          for (const e of live.take()) {
            if (e.id <= cursor) continue
            await stream.writeSSE({ id: String(e.id), event: 'revocation', data: e.data })
            deps.metrics.feedEvents.inc({ mode: 'stream' })
            cursor = e.id
          }
        }
      } finally {
        live.close()
        deps.metrics.feedSubscribers.dec()
      }
    })
  })
}
