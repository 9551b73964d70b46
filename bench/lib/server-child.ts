/**
 * The child side of a benchmark server: config in from the environment, one READY line out on
 * stdout, and an exit when the parent says so (SIGTERM) or goes away (stdin closes).
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'

export const CONFIG_ENV = 'BENCH_SERVER_CONFIG'
export const READY_PREFIX = 'READY '
/** The prefix of a child's answer to a command line from the parent (see {@link answerCommands}). */
export const REPLY_PREFIX = 'REPLY '

/** One command's answer: its value, or why it failed. */
export type Reply = { ok: true; value: unknown } | { ok: false; error: string }

/** Loopback only: no benchmark server ever listens on another address. */
export const HOST = '127.0.0.1'

export interface ReadyMessage {
  port: number
  /** What the server wants the run to report about itself (start-up figures, …). */
  info?: Record<string, unknown>
}

export function readServerConfig<T>(): T {
  const text = process.env[CONFIG_ENV]
  if (!text) throw new Error(`${CONFIG_ENV} is not set: benchmark servers are started by bench/run.ts`)
  return JSON.parse(text) as T
}

/** Resolves once `server` listens on HOST:`port` (0: any free port). */
export function listenOn(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, HOST, () => resolve((server.address() as AddressInfo).port))
  })
}

export function announceReady(port: number, info?: object): void {
  const msg: ReadyMessage = { port, ...(info ? { info: { ...info } } : {}) }
  process.stdout.write(`${READY_PREFIX}${JSON.stringify(msg)}\n`)
}

/** Runs `cleanup` once, then exits, on SIGTERM/SIGINT or when the parent closes our stdin. */
export function exitWithParent(cleanup: () => void = () => {}): void {
  let done = false
  const stop = () => {
    if (done) return
    done = true
    try {
      cleanup()
    } finally {
      process.exit(0)
    }
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.stdin.on('end', stop)
  process.stdin.on('error', stop)
  process.stdin.resume()
}

/**
 * Answers each line the parent writes to our stdin with one REPLY line on stdout, in order: a
 * measurement taken inside the server's process, between load runs (no network in the way).
 */
export function answerCommands(handler: (command: string) => unknown): void {
  createInterface({ input: process.stdin }).on('line', (line) => {
    let reply: Reply
    try {
      reply = { ok: true, value: handler(line.trim()) }
    } catch (e) {
      reply = { ok: false, error: e instanceof Error ? e.message : String(e) }
    }
    process.stdout.write(`${REPLY_PREFIX}${JSON.stringify(reply)}\n`)
  })
}
