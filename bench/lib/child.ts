/**
 * The parent side of a benchmark server: each server runs in its own `node --import tsx`
 * process (so autocannon never shares its event loop), is known by the READY line it prints,
 * and is always stopped — SIGTERM, then SIGKILL — including when the parent itself exits.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { CONFIG_ENV, HOST, READY_PREFIX, REPLY_PREFIX, type ReadyMessage, type Reply } from './server-child.js'

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** What a server wrote to stderr (and to stdout after READY): a count and the first lines. */
export interface ServerLog {
  lines: number
  first: string[]
}

export interface ServerProcess {
  name: string
  port: number
  url: string
  log: ServerLog
  /** The server's process id (its CPU time is read from /proc by bench/lib/cpu.ts). */
  pid: number | undefined
  /** Milliseconds from spawning the process to its READY line. */
  startupMs: number
  /** The `info` of its READY line, if any. */
  info: Record<string, unknown> | undefined
  /** Whether the process died on its own (a crash under load). */
  exited(): { code: number | null; signal: NodeJS.Signals | null } | undefined
  /** Sends one command line to a server that answers commands (`answerCommands`); resolves with its value. */
  ask(command: string, timeoutMs?: number): Promise<unknown>
  stop(): Promise<void>
}

const KEEP_LINES = 12
const live = new Set<ChildProcess>()

/**
 * Last resort on any exit path of the parent: no benchmark server outlives it. SIGTERM lets a
 * server clean up after itself; one that cannot still exits when its stdin (our end) closes.
 */
export function killAllServers(): void {
  for (const child of live) {
    child.stdin?.destroy()
    child.kill('SIGTERM')
  }
  live.clear()
}

/** Every port {@link freePort} has handed out in this process. */
const handedOut = new Set<number>()

/** A free TCP port on the loopback address (for a server whose URL must be known before it starts). */
export async function freePort(): Promise<number> {
  // A probed port is free again once its probe closes: the kernel may hand it out to the next
  // probe too, and two servers of one run would then race for it (a broker took a port the proxy
  // was given, and the proxy exited with EADDRINUSE). A port is handed out once per process.
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await probePort()
    if (!handedOut.has(port)) {
      handedOut.add(port)
      return port
    }
  }
  throw new Error('no free port found that this run has not handed out already')
}

function probePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, HOST, () => {
      const address = probe.address()
      const port = typeof address === 'object' && address ? address.port : 0
      probe.close(() => resolve(port))
    })
  })
}

/**
 * BENCH_PROFILE_DIR: each server writes a V8 CPU profile of its whole life (`--cpu-prof`) into
 * `<dir>/<server name>/` when it stops, to see where a scenario's time goes. Profiling slows the
 * servers: figures from such a run are not the benchmark's.
 */
function profileArgs(name: string): string[] {
  const dir = process.env.BENCH_PROFILE_DIR
  if (!dir) return []
  return ['--cpu-prof', `--cpu-prof-dir=${join(dir, name.replace(/[^A-Za-z0-9._-]+/g, '-'))}`]
}

/** Starts `bench/servers/<script>.ts` with `config`, resolving once it listens. */
export function startServer(name: string, script: string, config: unknown, timeoutMs = 60_000): Promise<ServerProcess> {
  const path = fileURLToPath(new URL(`../servers/${script}.ts`, import.meta.url))
  const spawnedAt = performance.now()
  const child = spawn(process.execPath, [...profileArgs(name), '--import', 'tsx', path], {
    cwd: REPO_ROOT,
    env: { ...process.env, [CONFIG_ENV]: JSON.stringify(config) },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  live.add(child)
  const log: ServerLog = { lines: 0, first: [] }
  const record = (line: string) => {
    log.lines++
    if (log.first.length < KEEP_LINES) log.first.push(line.length > 400 ? `${line.slice(0, 400)}…` : line)
  }
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal }
      live.delete(child)
      for (const waiting of pending.splice(0)) waiting.reject(new Error(`${name} server exited (code ${code}, signal ${signal})`))
      resolve()
    })
  })
  createInterface({ input: child.stderr! }).on('line', record)
  // Commands are answered in order: one pending entry per command sent.
  const pending: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void }> = []
  const ask = (command: string, timeoutMs = 120_000) =>
    new Promise<unknown>((resolve, reject) => {
      if (exit || !child.stdin?.writable) {
        reject(new Error(`${name} server is not running`))
        return
      }
      const timer = setTimeout(() => reject(new Error(`${name} server did not answer "${command}" within ${timeoutMs} ms`)), timeoutMs)
      pending.push({
        resolve: (v) => {
          clearTimeout(timer)
          resolve(v)
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        },
      })
      child.stdin.write(`${command}\n`)
    })
  const answer = (line: string) => {
    const reply = JSON.parse(line.slice(REPLY_PREFIX.length)) as Reply
    const waiting = pending.shift()
    if (!waiting) return
    if (reply.ok) waiting.resolve(reply.value)
    else waiting.reject(new Error(`${name} server: ${reply.error}`))
  }

  const stop = async () => {
    if (exit) return
    child.stdin?.end()
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
    await exited
    clearTimeout(timer)
  }

  return new Promise((resolve, reject) => {
    let ready = false
    const fail = (why: string) => {
      if (ready) return
      ready = true
      clearTimeout(timer)
      void stop().then(() => reject(new Error(`${name} server ${why}${log.first.length ? `:\n  ${log.first.join('\n  ')}` : ''}`)))
    }
    const timer = setTimeout(() => fail(`did not start within ${timeoutMs} ms`), timeoutMs)
    void exited.then(() => fail(`exited before it was ready (code ${exit?.code}, signal ${exit?.signal})`))
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (ready && line.startsWith(REPLY_PREFIX)) {
        answer(line)
        return
      }
      if (ready || !line.startsWith(READY_PREFIX)) {
        record(line)
        return
      }
      ready = true
      clearTimeout(timer)
      const { port, info } = JSON.parse(line.slice(READY_PREFIX.length)) as ReadyMessage
      resolve({ name, port, url: `http://${HOST}:${port}`, pid: child.pid, log, startupMs: Math.round(performance.now() - spawnedAt), info, exited: () => exit, ask, stop })
    })
  })
}

/**
 * The safety net of every benchmark entry point: the run stops by itself after `seconds`
 * (killing its servers) and on SIGINT/SIGTERM, and no server outlives it.
 */
export function installWatchdog(label: string, seconds: number): NodeJS.Timeout {
  const watchdog = setTimeout(() => {
    process.stderr.write(`${label}: watchdog — still running after ${Math.round(seconds)} s, stopping\n`)
    killAllServers()
    process.exit(1)
  }, seconds * 1000)
  watchdog.unref()
  process.on('exit', killAllServers)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      killAllServers()
      process.exit(130)
    })
  }
  return watchdog
}
