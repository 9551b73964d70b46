/**
 * A round-robin TCP proxy on the loopback address, the load balancer in front of several broker
 * processes: each accepted connection goes to the next upstream port in turn and is piped both
 * ways, byte for byte (HTTP keep-alive connections stay on the upstream they were given). No
 * health checks and no retries: an upstream that refuses a connection closes the client's.
 */
import { connect, createServer, type Server, type Socket } from 'node:net'

export interface ProxyOptions {
  /** Where it listens (0: any free port). */
  port: number
  /** The upstream ports, on the same host; connections go to them in this order, round-robin. */
  upstreams: readonly number[]
  host?: string
}

export interface RoundRobinProxy {
  port: number
  /** Connections handed to each upstream so far, in the order of `upstreams`. */
  connections(): number[]
  /** Connections that failed to reach their upstream. */
  failures(): number
  close(): Promise<void>
}

export function startRoundRobinProxy(opts: ProxyOptions): Promise<RoundRobinProxy> {
  const host = opts.host ?? '127.0.0.1'
  const upstreams = [...opts.upstreams]
  if (upstreams.length === 0) throw new Error('a proxy needs at least one upstream port')
  for (const p of upstreams) if (!Number.isInteger(p) || p <= 0 || p > 65535) throw new Error(`upstream port ${String(p)} is not a port number`)
  const handed = upstreams.map(() => 0)
  let failed = 0
  let next = 0
  const open = new Set<Socket>()

  const server: Server = createServer({ noDelay: true }, (client) => {
    const i = next
    next = (next + 1) % upstreams.length
    handed[i]!++
    const upstream = connect({ port: upstreams[i]!, host, noDelay: true })
    open.add(client)
    open.add(upstream)
    let reached = false
    upstream.once('connect', () => {
      reached = true
    })
    const end = () => {
      client.destroy()
      upstream.destroy()
      open.delete(client)
      open.delete(upstream)
    }
    upstream.once('error', () => {
      if (!reached) failed++
      end()
    })
    client.once('error', end)
    upstream.once('close', end)
    client.once('close', end)
    client.pipe(upstream)
    upstream.pipe(client)
  })

  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, host, () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : opts.port
      resolve({
        port,
        connections: () => [...handed],
        failures: () => failed,
        close: () =>
          new Promise<void>((done) => {
            for (const s of open) s.destroy()
            server.close(() => done())
          }),
      })
    })
  })
}
