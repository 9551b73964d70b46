import type { Context } from 'hono'
import type { IncomingMessage } from 'node:http'

/**
 * Whether the client closed the connection before its request was complete (a body cut off
 * mid-way, RFC 9112 §8: an incomplete message). Read from Node's request object, not from the
 * error the body read raised, so it holds whichever handler read the body and however it wrapped
 * the failure. Such a request is its own outcome — nobody is there to read a response — not a
 * server error. In-process requests (`app.request`) have no socket and are never aborted.
 */
export function isAbortedRequest(c: Context): boolean {
  const env = c.env as { incoming?: IncomingMessage } | undefined
  const incoming = env?.incoming
  if (incoming === undefined || typeof incoming !== 'object' || !('complete' in incoming)) return false
  return !incoming.complete && (incoming.readableAborted || incoming.destroyed)
}
