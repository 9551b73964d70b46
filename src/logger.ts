import { pino, type DestinationStream } from 'pino'
import type { LogLevel } from './config.js'

/**
 * The access log's line (src/http/access-log.ts), one per request: fixed fields, none of them a
 * credential — ids, the method, the route pattern, the status and the duration.
 */
export interface AccessLine {
  requestId: string
  method: string
  route: string
  status: number | 'aborted'
  durationMs: number
  /** Who called, once authenticated (`workload:<id>`, `resource:<client id>`, `admin:<key id>`). */
  callerId?: string | undefined
}

/** Structured logger. Never pass raw tokens or secrets in `fields`. */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
  /**
   * Writes the access line: `request` at `info` with the {@link AccessLine} fields, in its order,
   * and nothing else. Optional: a logger without it is given `info('request', fields)`.
   */
  access?(line: AccessLine): void
}


/**
 * Field paths pino replaces with `[redacted]` whatever the caller passed: a second line of
 * defence behind the rule that no credential is ever put in a log field. Covers the request
 * headers and form fields that carry credentials, at the top level and one level down.
 */
export const REDACT_PATHS = [
  'authorization', 'Authorization', 'dpop', 'DPoP', 'actorToken', 'actor_token', 'Actor-Token', 'subject_token', 'subjectToken',
  'client_assertion', 'clientAssertion', 'client_secret', 'clientSecret', 'assertion', 'token', 'access_token', 'refresh_token',
  'password', 'secret', 'apiKey', 'kek',
].flatMap((k) => {
  const key = /^[A-Za-z_$][\w$]*$/.test(k) ? k : `["${k}"]`
  const dot = key.startsWith('[') ? key : `.${key}`
  return [key, `*${dot}`, `headers${dot}`]
})

export interface PinoLogger extends Logger {
  /** Writes out what the asynchronous destination still buffers (on shutdown). */
  flush(): void
  /** Changes the level (the configuration's `logging.level`, known once the config is read). */
  setLevel(level: LogLevel): void
}

/**
 * The server's logger: pino JSON lines (`time` ISO 8601, `level` as its name, `msg`, then the
 * fields). The default destination is stderr through pino's asynchronous writer (sonic-boom,
 * `sync: false`): a request never waits on a write, and pino flushes it synchronously when the
 * process exits (`process.exit`, an uncaught exception); only a hard kill loses the lines still
 * buffered. Tests pass their own `destination`.
 */
export function createPinoLogger(opts: { level?: LogLevel; destination?: DestinationStream } = {}): PinoLogger {
  const destination = opts.destination ?? pino.destination({ dest: 2, sync: false })
  // The access line, one per request, is written without pino's redaction: that pass matches
  // every field against every path on each line (a quarter of an introspection's CPU). The line
  // is redacted by construction instead: only the AccessLine fields are copied into it, and none
  // of them carries a credential. Every other line goes through `log`, which redacts by path.
  const accessLog = pino(
    {
      level: opts.level ?? 'info',
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  )
  const log = accessLog.child({}, { redact: { paths: REDACT_PATHS, censor: '[redacted]' } })
  const at = (level: 'info' | 'warn' | 'error') => (msg: string, fields?: Record<string, unknown>) => {
    if (fields === undefined) log[level](msg)
    else log[level](fields, msg)
  }
  return {
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    access: (line) => {
      const { requestId, method, route, status, durationMs, callerId } = line
      accessLog.info(callerId === undefined ? { requestId, method, route, status, durationMs } : { requestId, method, route, status, durationMs, callerId }, 'request')
    },
    flush: () => accessLog.flush(),
    setLevel: (level) => {
      accessLog.level = level
      log.level = level
    },
  }
}

/** @deprecated kept for embedders: a pino logger writing JSON lines through `write`. */
export function createJsonLogger(write: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  return createPinoLogger({ destination: { write: (line: string) => write(line.replace(/\n$/, '')) } })
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} }
