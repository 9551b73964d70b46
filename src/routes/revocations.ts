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
 * event after `Last-Event-ID` (or `after`) as it is committed, with a heartbeat comment. Both
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
      const events = readEvents(deps.stores, after, Number(limitText), resource.uri)
      deps.metrics.feedEvents.inc({ mode: 'poll' }, events.length)
      return c.json({ events, cursor: events.at(-1)?.id ?? String(after), ...feedPosition(deps.stores) })
    }

    return streamSSE(c, async (stream) => {
      let cursor = after
      // Set by every notification and cleared just before the table is read: a commit that lands
      // while earlier events are still being written to a slow socket is read on the next pass,
      // never left for the heartbeat.
      let dirty = true
      let wake: (() => void) | undefined
      const unsubscribe = deps.stores.revocations.subscribe(() => {
        dirty = true
        wake?.()
      })
      deps.metrics.feedSubscribers.inc()
      stream.onAbort(() => wake?.())
      try {
        await stream.writeSSE({ event: 'ready', data: JSON.stringify({ cursor: String(cursor), ...feedPosition(deps.stores) }), retry: 1000 })
        while (!stream.aborted) {
          if (dirty) {
            dirty = false
            for (;;) {
              const events = readEvents(deps.stores, cursor, PAGE, resource.uri)
              for (const e of events) {
                await stream.writeSSE({ id: e.id, event: 'revocation', data: JSON.stringify(e) })
                deps.metrics.feedEvents.inc({ mode: 'stream' })
              }
              if (events.length > 0) cursor = Number(events.at(-1)!.id)
              if (events.length < PAGE) break
            }
            continue
          }
          const woke = await new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), HEARTBEAT_MS)
            wake = () => {
              clearTimeout(timer)
              resolve(true)
            }
          })
          wake = undefined
          if (!woke && !stream.aborted) await stream.write(': heartbeat\n\n')
        }
      } finally {
        unsubscribe()
        deps.metrics.feedSubscribers.dec()
      }
    })
  })
}
