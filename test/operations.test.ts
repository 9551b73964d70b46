/**
 * Operations: the pino logs (JSON lines with time, level, msg and a request id; one access line
 * per request with route, status, duration and caller id; never a credential), the Prometheus
 * metrics documented in docs/operations.md, and `npm start -- --check-config`.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { createPinoLogger } from '../src/logger.js'
import { ADMIN_KEY, NOTES, NOTES_SECRET, openTask, testConfig, testKeys, withBroker, type TestBroker } from './harness.js'

const basic = `Basic ${Buffer.from(`notes-mcp:${NOTES_SECRET}`).toString('base64')}`

/** A broker whose logger is the server's pino logger, writing into `lines`. */
function withPinoBroker<T>(fn: (b: TestBroker, lines: string[]) => Promise<T>): Promise<T> {
  const lines: string[] = []
  const logger = createPinoLogger({ destination: { write: (s: string) => void lines.push(...s.split('\n').filter(Boolean)) } })
  return withBroker({ logger }, (b) => fn(b, lines))
}

const parsed = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>)
const accessLines = (lines: string[], route: string) => parsed(lines).filter((l) => l.msg === 'request' && l.route === route)

describe('logs', () => {
  it('an exchange, a task opening and an introspection: access lines with request id, status, duration and caller; no credential in any line', () =>
    withPinoBroker(async (b, lines) => {
      const session = await b.session()
      const svid = await b.svid('a')
      const exchanged = await b.exchange({ subject_token: session, actor_token: svid })
      assert.equal(exchanged.status, 200)
      const { access_token: token } = (await exchanged.json()) as { access_token: string }

      const taskSession = await b.session({ sid: 'sess-2' })
      const taskSvid = await b.svid('a', { jti: 'svid-2' })
      const opened = await openTask(b, { purpose: 'ops test', resources: [{ resource: NOTES, scopes: ['notes:read'] }] }, { session: taskSession, svid: taskSvid })
      assert.equal(opened.status, 201)
      const taskId = ((await opened.json()) as { task_id: string }).task_id

      const introspected = await b.post('/introspect', { token }, { authorization: basic, 'x-request-id': 'req-ops-1' })
      assert.equal(introspected.status, 200)
      assert.equal(((await introspected.json()) as { active: boolean }).active, true)
      assert.equal(introspected.headers.get('x-request-id'), 'req-ops-1')

      // A refusal with a credential-bearing header: its line must not carry the header either.
      const refused = await b.post('/introspect', { token }, { authorization: 'Basic ' + Buffer.from('notes-mcp:wrong-secret-value').toString('base64') })
      assert.equal(refused.status, 401)

      const admin = await b.app.request(`/admin/tasks/${taskId}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(admin.status, 200)

      assert.ok(lines.length >= 5)
      const secrets = [token, session, svid, taskSession, taskSvid, NOTES_SECRET, 'wrong-secret-value', ADMIN_KEY, basic.slice(6)]
      for (const line of lines) {
        for (const s of secrets) assert.ok(!line.includes(s), `a log line carries a credential: ${line}`)
        const entry = JSON.parse(line) as Record<string, unknown>
        assert.match(String(entry.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
        assert.ok(['info', 'warn', 'error'].includes(String(entry.level)), line)
        assert.equal(typeof entry.msg, 'string')
      }

      // docs/operations.md shows an access line: the same fields, in the same order, as the broker writes.
      const shown = JSON.parse(/```json\n(.*)\n```/.exec(readFileSync(new URL('../docs/operations.md', import.meta.url), 'utf8'))![1]!) as Record<string, unknown>
      assert.deepEqual(Object.keys(shown), Object.keys(accessLines(lines, '/token')[0]!))

      const expect = (route: string, status: number, callerId: string | undefined) => {
        const found = accessLines(lines, route).filter((l) => l.status === status)
        assert.equal(found.length, 1, `${route} ${status}: ${JSON.stringify(parsed(lines))}`)
        const [l] = found as [Record<string, unknown>]
        assert.match(String(l.requestId), /^[\w.:@/+=-]{1,128}$/)
        assert.equal(typeof l.durationMs, 'number')
        assert.ok((l.durationMs as number) >= 0)
        assert.equal(l.callerId, callerId)
        return l
      }
      expect('/token', 200, 'workload:agent-a')
      expect('/tasks', 201, 'workload:agent-a')
      assert.equal(expect('/introspect', 200, 'resource:notes-mcp').requestId, 'req-ops-1')
      expect('/introspect', 401, undefined)
      // The route pattern, not the task's id.
      expect('/admin/tasks/:id/revoke', 200, 'admin:key0')
      assert.ok(lines.every((l) => !l.includes(`"route":"/admin/tasks/${taskId}/revoke"`)))
      // The refusal logged by the error handler carries the same request id as its access line.
      const warn = parsed(lines).find((l) => l.msg === 'request refused')
      assert.ok(warn)
      assert.equal(warn.requestId, accessLines(lines, '/introspect').find((l) => l.status === 401)!.requestId)
    }))

  it('a generated request id when none (or a malformed one) is sent, echoed on the response', () =>
    withPinoBroker(async (b, lines) => {
      const none = await b.app.request('/health')
      const bad = await b.app.request('/health', { headers: { 'x-request-id': 'a b "forged":1' } })
      const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
      assert.match(none.headers.get('x-request-id') ?? '', uuid)
      assert.match(bad.headers.get('x-request-id') ?? '', uuid)
      assert.deepEqual(
        parsed(lines).filter((l) => l.msg === 'request').map((l) => l.requestId),
        [none.headers.get('x-request-id'), bad.headers.get('x-request-id')],
      )
    }))

  it('credential fields are redacted by path, whoever passes them', () => {
    const lines: string[] = []
    const logger = createPinoLogger({ destination: { write: (s: string) => void lines.push(s) } })
    logger.warn('careless', { authorization: 'Bearer sekret-1', headers: { 'Actor-Token': 'sekret-2', dpop: 'sekret-3' }, form: { client_assertion: 'sekret-4', subject_token: 'sekret-5' }, client_secret: 'sekret-6' })
    assert.equal(lines.length, 1)
    assert.ok(!lines[0]!.includes('sekret'), lines[0])
    const entry = JSON.parse(lines[0]!) as { authorization: string; headers: Record<string, string> }
    assert.equal(entry.authorization, '[redacted]')
    assert.equal(entry.headers['Actor-Token'], '[redacted]')
  })

  it('the access line carries its fixed fields alone, whatever else the object holds: redacted by construction', () => {
    const lines: string[] = []
    const logger = createPinoLogger({ destination: { write: (s: string) => void lines.push(s) } })
    assert.ok(logger.access, 'the pino logger writes the access line itself')
    const careless = { requestId: 'req-1', method: 'POST', route: '/introspect', status: 200, durationMs: 0.42, callerId: 'resource:notes-mcp', authorization: 'Basic sekret-1', headers: { dpop: 'sekret-2' } }
    logger.access(careless)
    logger.access({ requestId: 'req-2', method: 'GET', route: '/health', status: 'aborted', durationMs: 1.5 })
    assert.equal(lines.length, 2)
    assert.ok(!lines.join('').includes('sekret'), lines.join(''))
    const [first, second] = lines.map((l) => JSON.parse(l) as Record<string, unknown>) as [Record<string, unknown>, Record<string, unknown>]
    assert.match(String(first.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    assert.deepEqual({ ...first, time: 't' }, { level: 'info', time: 't', requestId: 'req-1', method: 'POST', route: '/introspect', status: 200, durationMs: 0.42, callerId: 'resource:notes-mcp', msg: 'request' })
    assert.deepEqual(Object.keys(first), ['level', 'time', 'requestId', 'method', 'route', 'status', 'durationMs', 'callerId', 'msg'])
    assert.deepEqual({ ...second, time: 't' }, { level: 'info', time: 't', requestId: 'req-2', method: 'GET', route: '/health', status: 'aborted', durationMs: 1.5, msg: 'request' })
    // The level applies to it as to every line.
    logger.setLevel('warn')
    logger.access(careless)
    logger.info('hidden')
    logger.warn('shown', { authorization: 'Bearer sekret-3' })
    assert.equal(lines.length, 3)
    assert.deepEqual(JSON.parse(lines[2]!), { ...(JSON.parse(lines[2]!) as object), level: 'warn', msg: 'shown', authorization: '[redacted]' })
  })

  it('logging.level (and TASKPASS_LOG_LEVEL) filters lines; an unknown level is a configuration error', async () => {
    const lines: string[] = []
    const logger = createPinoLogger({ level: 'warn', destination: { write: (s: string) => void lines.push(s) } })
    logger.info('hidden')
    logger.warn('shown')
    assert.deepEqual(lines.map((l) => (JSON.parse(l) as { msg: string }).msg), ['shown'])
    const { parseConfig, applyEnv } = await import('../src/config.js')
    const keys = await testKeys()
    assert.equal(parseConfig(testConfig(keys)).logging.level, 'info')
    assert.equal(parseConfig(applyEnv({ ...testConfig(keys), logging: { level: 'error' } } as Record<string, unknown>, { TASKPASS_LOG_LEVEL: 'debug' })).logging.level, 'debug')
    assert.throws(() => parseConfig({ ...testConfig(keys), logging: { level: 'loud' } }), /logging\.level/)
  })
})

/** Every line of a Prometheus text exposition: a HELP or TYPE comment, or a sample. */
function assertExposition(text: string): Map<string, string> {
  const types = new Map<string, string>()
  const name = '[a-zA-Z_:][a-zA-Z0-9_:]*'
  const labels = `\\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\["\\\\n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\["\\\\n])*")*,?)?\\}`
  const sample = new RegExp(`^(${name})(?:${labels})? (?:[-+]?(?:[0-9]+(?:\\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\\.[0-9]+)|NaN|[-+]Inf)(?: -?[0-9]+)?$`)
  for (const line of text.split('\n')) {
    if (line === '') continue
    const help = new RegExp(`^# HELP (${name}) .*$`).exec(line)
    const type = new RegExp(`^# TYPE (${name}) (counter|gauge|histogram|summary|untyped)$`).exec(line)
    if (type) types.set(type[1]!, type[2]!)
    else if (!help) assert.match(line, sample)
  }
  return types
}

describe('metrics', () => {
  it('parse as Prometheus exposition and hold every documented metric after one exchange and one refusal', () =>
    withBroker(undefined, async (b) => {
      assert.equal((await b.exchange()).status, 200)
      // Authenticated and refused (a scope outside the grant): a deny decision, audited.
      const denied = await b.exchange({ scope: 'notes:delete' })
      assert.equal(denied.status, 400)
      const deniedCode = ((await denied.json()) as { error: string }).error
      // Refused before authentication.
      assert.equal((await b.exchange({ actor_token: 'not-a-jwt' })).status, 400)
      assert.equal((await b.app.request('/revocations?after=0', { headers: { authorization: basic } })).status, 200)

      const res = await b.app.request('/metrics', { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(res.status, 200)
      const text = await res.text()
      const types = assertExposition(text)

      const documented = [...readFileSync('docs/operations.md', 'utf8').matchAll(/^\| `(taskpass_[a-z_]+)` \| (counter|gauge|histogram) \|/gm)].map((m) => [m[1]!, m[2]!] as const)
      assert.ok(documented.length >= 10)
      for (const [metric, type] of documented) assert.equal(types.get(metric), type, metric)
      // …and nothing of ours undocumented.
      for (const metric of types.keys()) if (metric.startsWith('taskpass_')) assert.ok(documented.some(([d]) => d === metric), `undocumented: ${metric}`)
      for (const metric of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) assert.ok(types.has(metric), metric)

      const sample = (line: string) => assert.ok(text.split('\n').includes(line), `${line} in\n${text.split('\n').filter((l) => l.startsWith('taskpass_')).join('\n')}`)
      sample('taskpass_token_decisions_total{outcome="allow",error=""} 1')
      sample(`taskpass_token_decisions_total{outcome="deny",error="${deniedCode}"} 1`)
      sample('taskpass_token_decisions_total{outcome="unauthenticated",error="invalid_request"} 1')
      sample('taskpass_unauthenticated_refusals_total{endpoint="token",error="invalid_request"} 1')
      sample('taskpass_tokens_issued_total{token_type="Bearer"} 1')
      sample('taskpass_tasks{status="active"} 1')
      sample('taskpass_revocation_feed_subscribers 0')
      sample('taskpass_revocation_feed_events_total{mode="poll"} 0')
      sample('taskpass_http_request_duration_seconds_count{method="POST",route="/token",status_class="2xx"} 1')
      sample('taskpass_http_request_duration_seconds_count{method="POST",route="/token",status_class="4xx"} 2')
      assert.match(text, /^taskpass_policy_evaluation_seconds_count\{evaluator="native",action="token.exchange"\} [1-9]/m)
    }))

  it('cache lookups are counted by cache and result: the same attestation and session twice is one miss, one hit', () =>
    withBroker(undefined, async (b) => {
      const params = { subject_token: await b.session(), actor_token: await b.svid('a') }
      assert.equal((await b.exchange(params)).status, 200)
      assert.equal((await b.exchange(params)).status, 200)
      for (let i = 0; i < 2; i++) assert.equal((await b.app.request('/admin/audit', { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200)
      const text = await b.deps.metrics.render()
      for (const cache of ['actor_tokens', 'subject_tokens', 'admin_keys']) {
        assert.match(text, new RegExp(`^taskpass_cache_lookups_total\\{cache="${cache}",result="miss"\\} 1$`, 'm'), cache)
        assert.match(text, new RegExp(`^taskpass_cache_lookups_total\\{cache="${cache}",result="hit"\\} 1$`, 'm'), cache)
      }
    }))

  it('429s are counted by route; Cedar evaluations are labelled cedar', () =>
    withBroker((c) => ({ ...c, rateLimits: { perIp: false, perWorkload: { ratePerSecond: 1, burst: 1 } }, policies: { file: writePolicyFile() } }), async (b) => {
      assert.equal((await b.exchange()).status, 200)
      assert.equal((await b.exchange()).status, 429)
      const text = await b.deps.metrics.render()
      assert.match(text, /^taskpass_rate_limited_requests_total\{route="\/token"\} 1$/m)
      assert.match(text, /^taskpass_policy_evaluation_seconds_count\{evaluator="cedar",action="token.exchange"\} [1-9]/m)
    }))
})

describe('metrics: the revocation feed', () => {
  it('counts open streams and the events they deliver; a closed stream is no longer counted', () =>
    withBroker(undefined, async (b) => {
      const gauge = async () => Number(/^taskpass_revocation_feed_subscribers (\d+)$/m.exec(await b.deps.metrics.render())?.[1])
      const res = await b.app.request('/revocations?after=0', { headers: { authorization: basic, accept: 'text/event-stream' } })
      assert.equal(res.status, 200)
      const reader = res.body!.getReader()
      const decoder = new TextDecoder()
      let text = ''
      const until = async (what: string) => {
        while (!text.includes(what)) {
          const { value, done } = await reader.read()
          if (done) throw new Error(`stream ended before ${what}`)
          text += decoder.decode(value, { stream: true })
        }
      }
      await until('event: ready')
      assert.equal(await gauge(), 1)
      const { task_id: taskId } = (await (await b.exchange()).json()) as { task_id: string }
      assert.equal((await b.app.request(`/tasks/${taskId}/revoke`, { method: 'POST', headers: { 'actor-token': await b.svid('a') } })).status, 200)
      await until('event: revocation')
      // An event is counted once its write completed, and a stream once its loop saw the cancel:
      // both a turn after the reader has its bytes. Waited for, bounded.
      const eventually = async (ok: () => Promise<boolean>) => {
        for (let i = 0; i < 200 && !(await ok()); i++) await new Promise((r) => setTimeout(r, 10))
        assert.ok(await ok())
      }
      const streamed = /^taskpass_revocation_feed_events_total\{mode="stream"\} 1$/m
      await eventually(async () => streamed.test(await b.deps.metrics.render()))
      await reader.cancel()
      await eventually(async () => (await gauge()) === 0)
    }))
})

function writePolicyFile(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'taskpass-ops-')), 'extra.cedar')
  writeFileSync(file, '@id("ops-old-sessions")\nforbid (principal == Taskpass::Workload::"agent-b", action == Taskpass::Action::"exchange", resource) when { context has session_age && context.session_age > 86400 };\n')
  return file
}

describe('npm start -- --check-config', () => {
  const check = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', '--check-config', ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } })

  it('a good file: "configuration ok", exit 0, no database created, nothing listening', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-check-'))
    const file = join(dir, 'taskpass.json')
    const database = join(dir, 'broker.db')
    writeFileSync(file, JSON.stringify({ ...testConfig(await testKeys()), database, listen: { host: '127.0.0.1', port: 0 } }))
    const run = check(['--config', file])
    assert.equal(run.status, 0, run.stderr)
    assert.equal(run.stdout, 'configuration ok\n')
    assert.equal(existsSync(database), false)
  })

  it('a bad file: the problems named, exit 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-check-'))
    const file = join(dir, 'taskpass.json')
    writeFileSync(file, JSON.stringify({ ...testConfig(await testKeys()), tokenz: {}, logging: { level: 'loud' } }))
    const run = check(['--config', file])
    assert.equal(run.status, 2)
    assert.match(run.stderr, /tokenz/)
    assert.match(run.stderr, /logging\.level/)
    assert.equal(run.stdout, '')
    // An environment override is checked too.
    writeFileSync(file, JSON.stringify(testConfig(await testKeys())))
    const env = check(['--config', file], { TASKPASS_PORT: 'eighty' })
    assert.equal(env.status, 2)
    assert.match(env.stderr, /listen\.port/)
  })
})
