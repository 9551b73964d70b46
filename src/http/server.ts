import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { createAdaptorServer } from '@hono/node-server'
import { invalidRequest, OAuthError } from '../errors.js'

/** What {@link listen} serves: a hono app, or anything with its `fetch`. */
export interface FetchApp {
  // `env` carries the node request and response (the app reads the peer address from it).
  fetch(request: Request, env: never): Response | Promise<Response>
}

export interface Listening {
  server: Server
  address: AddressInfo
  /** Stops accepting connections and resolves when the open ones are done. */
  close(): Promise<void>
}

/** Node's parser errors (llhttp codes) that have a more exact status than 400. */
const STATUS_BY_CODE: Record<string, number> = {
  HPE_HEADER_OVERFLOW: 431,
  ERR_HTTP_REQUEST_TIMEOUT: 408,
}

/**
 * The broker's HTTP listener: @hono/node-server for `app`, with our own answer to bytes Node's
 * parser cannot read (the `clientError` event, RFC 9112 §2.2 / §9).
 *
 * Node's default answer is a bare `400` written at once, even when a request parsed earlier on
 * the same connection is still in the app: a valid request followed by garbage would then
 * commit (a task completed) while its client reads "400" and loses the real response. Here:
 * - requests the app has taken, complete, are in flight on the connection → nothing is written;
 *   their responses are delivered and the connection closed after them (the garbage is never
 *   answered: it was not a request); one still reading its body is the one the error is about
 *   (cut off, bad chunking) → the connection is destroyed and that request aborts;
 * - nothing in flight → a JSON `invalid_request` error (431 for oversized headers, 408 for a
 *   request timeout) with `Connection: close`;
 * - the peer already gone (reset, not writable) → the socket is destroyed, nothing written.
 */
export function listen(app: FetchApp, opts: { host: string; port: number }): Promise<Listening> {
  const server = createAdaptorServer({ fetch: (request, env) => app.fetch(request, env as never) }) as Server
  // Requests whose response is not finished yet, per connection; sockets to close once idle.
  const inFlight = new WeakMap<Socket, Set<IncomingMessage>>()
  const closeWhenIdle = new WeakSet<Socket>()

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket
    const open = inFlight.get(socket) ?? new Set()
    inFlight.set(socket, open.add(req))
    res.once('close', () => {
      open.delete(req)
      if (open.size === 0 && closeWhenIdle.has(socket)) socket.end()
    })
  })

  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy()
      return
    }
    const open = inFlight.get(socket)
    if (open !== undefined && open.size > 0) {
      // Bytes after complete requests were not a request: answer those, then close. A request
      // still reading its body is the broken one (cut off, malformed chunking): it aborts.
      if ([...open].every((req) => req.complete)) closeWhenIdle.add(socket)
      else socket.destroy()
      return
    }
    const status = STATUS_BY_CODE[err.code ?? ''] ?? 400
    const error = status === 400 ? invalidRequest('malformed HTTP request', err.code) : new OAuthError('invalid_request', status, status === 431 ? 'request headers too large' : 'request timeout', err.code)
    const body = JSON.stringify(error.toJSON())
    const reason = status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      () => socket.destroy(),
    )
  })

  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject)
      resolve({
        server,
        address: server.address() as AddressInfo,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done())
            server.closeIdleConnections()
          }),
      })
    })
  })
}
