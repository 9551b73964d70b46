/**
 * The bench's load balancer (bench/lib/proxy.ts) in a process of its own, as a real one would be:
 * one round-robin listener per proxied scenario (only one scenario is loaded at a time). The
 * `stats` command answers the connections each listener handed to each upstream.
 */
import { startRoundRobinProxy } from '../lib/proxy.js'
import { announceReady, answerCommands, exitWithParent, HOST, readServerConfig } from '../lib/server-child.js'

export interface ProxyServerConfig {
  listeners: Array<{ port: number; upstreams: number[] }>
}

/** What `stats` answers, one entry per listener in the config's order. */
export type ProxyStats = Array<{ port: number; connections: number[]; failures: number }>

const c = readServerConfig<ProxyServerConfig>()
if (c.listeners.length === 0) throw new Error('the proxy needs at least one listener')
const proxies = await Promise.all(c.listeners.map((l) => startRoundRobinProxy({ port: l.port, upstreams: l.upstreams, host: HOST })))
exitWithParent(() => {
  for (const p of proxies) void p.close()
})
answerCommands((command): ProxyStats => {
  if (command !== 'stats') throw new Error(`unknown command "${command}" (expected: stats)`)
  return proxies.map((p) => ({ port: p.port, connections: p.connections(), failures: p.failures() }))
})
announceReady(proxies[0]!.port, { ports: proxies.map((p) => p.port) })
