/**
 * The HTTP listener (src/http/server.ts) and what the wire can do to it, over real 127.0.0.1
 * sockets with raw bytes: bytes Node's parser rejects (`clientError`) after a request the app
 * has taken, or alone; a client hanging up mid-body (an aborted request is its own outcome in
 * /metrics, not a 500); and who may read /metrics (admin key by default, open, off, or a
 * separate unauthenticated listener).
 */
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { describe, it } from 'node:test'
import { createApp, createMetricsApp } from '../src/app.js'
import { createBroker } from '../src/broker.js'
import { createFixedClock } from '../src/clock.js'
import { ConfigError, parseConfig, type ConfigInput } from '../src/config.js'
import { listen, type Listening } from '../src/http/server.js'
import type { Logger } from '../src/logger.js'
import { ADMIN_KEY, createTestBroker, openTask, T0, testConfig, testKeys } from './harness.js'

/** Writes `bytes`, then reads until the server closes the connection (bounded). */
function raw(port: number, bytes: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`connection still open after ${timeoutMs} ms; read so far: ${Buffer.concat(chunks).toString('latin1').slice(0, 500)}`))
    }, timeoutMs)
    socket.on('data', (d) => chunks.push(d))
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      resolve(Buffer.concat(chunks).toString('latin1'))
    })
    socket.write(bytes, 'latin1')
  })
}

/** Splits a raw HTTP/1.1 answer into its responses' status lines and the first body. */
function parse(text: string): { statusLines: string[]; headers: string; body: string } {
  const statusLines = text.match(/HTTP\/1\.1 \d{3}[^\r\n]*/g) ?? []
  const end = text.indexOf('\r\n\r\n')
  return { statusLines, headers: text.slice(0, end), body: text.slice(end + 4) }
}

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!(await condition())) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

describe('listener: bytes the HTTP parser rejects', () => {
  it('a valid request followed by garbage on the same connection gets its real response, not a bare 400', async () => {
    const b = await createTestBroker()
    let server: Listening | undefined
    try {
      const opened = (await (await openTask(b, { purpose: 'p', resources: [{ resource: 'https://notes.test.example/mcp', scopes: ['notes:read'] }] })).json()) as { task_id: string }
      server = await listen(b.app, { host: '127.0.0.1', port: 0 })
      const svid = await b.svid('a')
      const text = await raw(
        server.address.port,
        `POST /tasks/${opened.task_id}/complete HTTP/1.1\r\nHost: 127.0.0.1\r\nActor-Token: ${svid}\r\nContent-Length: 0\r\n\r\n` + 'GARBAGE \x01\x02 not http\r\n\r\n',
      )
      const { statusLines, body } = parse(text)
      assert.deepEqual(statusLines, ['HTTP/1.1 200 OK'], text)
      assert.equal((JSON.parse(body) as { task: { status: string } }).task.status, 'completed')
      const row = (await b.rawQuery('select status from tasks where id = ?', [opened.task_id]))[0] as { status: string }
      assert.equal(row.status, 'completed', 'the operation the client was told about is the one that happened')
    } finally {
      await server?.close()
      await b.close()
    }
  })

  it('garbage alone: 400 with a JSON invalid_request body and Connection: close; oversized headers: 431', async () => {
    const b = await createTestBroker()
    let server: Listening | undefined
    try {
      server = await listen(b.app, { host: '127.0.0.1', port: 0 })
      const before = await b.count('audit_events')
      const bad = parse(await raw(server.address.port, 'GARBAGE \x01\x02 not http\r\n\r\n'))
      assert.deepEqual(bad.statusLines, ['HTTP/1.1 400 Bad Request'])
      assert.match(bad.headers, /\r\nContent-Type: application\/json\r\n/)
      assert.match(bad.headers, /\r\nConnection: close(\r\n|$)/)
      assert.match(bad.headers, /\r\nCache-Control: no-store\r\n/)
      assert.deepEqual(JSON.parse(bad.body), { error: 'invalid_request', error_description: 'malformed HTTP request' })
      const big = parse(await raw(server.address.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`))
      assert.deepEqual(big.statusLines, ['HTTP/1.1 431 Request Header Fields Too Large'])
      assert.equal((JSON.parse(big.body) as { error: string }).error, 'invalid_request')
      assert.equal(await b.count('audit_events'), before)
      // The listener still serves well-formed requests.
      assert.equal((await fetch(`http://127.0.0.1:${server.address.port}/healthz`)).status, 200)
    } finally {
      await server?.close()
      await b.close()
    }
  })
})

describe('metrics: a client that hangs up mid-body', () => {
  it('is counted as aborted, not as a 500, and is not logged as an error', async () => {
    const keys = await testKeys()
    const logged: string[] = []
    const logger: Logger = { info() {}, warn: (m) => void logged.push(`warn ${m}`), error: (m) => void logged.push(`error ${m}`) }
    const config = parseConfig(testConfig(keys))
    const deps = await createBroker({ config, clock: createFixedClock(T0), logger, kek: Buffer.from(config.keys.kek!, 'base64url') })
    const server = await listen(createApp(deps), { host: '127.0.0.1', port: 0 })
    try {
      const abortMidBody = async (head: string) => {
        let seen = false
        const onRequest = () => void (seen = true)
        server.server.on('request', onRequest)
        const socket = connect(server.address.port, '127.0.0.1')
        socket.on('error', () => {})
        socket.write(head)
        await until(() => seen, 'the server took the request')
        server.server.off('request', onRequest)
        socket.destroy()
      }
      const scrape = async () => {
        const res = await fetch(`http://127.0.0.1:${server.address.port}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
        assert.equal(res.status, 200)
        return res.text()
      }
      // Verifies the admin key once (then cached): scrapes never wait for the verification slot.
      assert.doesNotMatch(await scrape(), /status="aborted"/)
      // A form body (the token endpoint) and a JSON body (an admin call), each cut in half.
      await abortMidBody('POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=urn%3Aietf%3Aparams')
      await abortMidBody(`POST /admin/sessions/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n{"issuer":"https://idp`)
      let text = ''
      await until(async () => /route="\/admin\/sessions\/revoke",status="aborted"\}/.test((text = await scrape())), 'both aborted requests counted')
      assert.match(text, /taskpass_http_requests_total\{method="POST",route="\/token",status="aborted"\} 1\n/)
      assert.match(text, /taskpass_http_requests_total\{method="POST",route="\/admin\/sessions\/revoke",status="aborted"\} 1\n/)
      assert.doesNotMatch(text, /status="5\d\d"/)
      assert.doesNotMatch(text, /route="\/token",status="400"/)
      assert.deepEqual(logged, [])
    } finally {
      await server.close()
      await deps.database.close()
    }
  })
})

describe('metrics: who may read them', () => {
  const withMetrics = (metrics: ConfigInput['metrics']) => (c: ConfigInput) => ({ ...c, metrics })

  it('default: the main listener wants an admin API key — none or a wrong one is 401 invalid_token', async () => {
    const b = await createTestBroker()
    try {
      assert.equal(b.deps.config.metrics.access, 'admin')
      for (const headers of [{}, { authorization: 'Bearer not-the-key' }, { authorization: 'Basic bm90ZXM6eA==' }] as Record<string, string>[]) {
        const res = await b.app.request('/metrics', { headers })
        assert.equal(res.status, 401)
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_token')
        assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer /)
        assert.equal(res.headers.get('cache-control'), 'no-store')
      }
      const ok = await b.app.request('/metrics', { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(ok.status, 200)
      assert.match(ok.headers.get('content-type') ?? '', /^text\/plain/)
      assert.match(await ok.text(), /taskpass_http_requests_total\{method="GET",route="\/metrics",status="401"\} 3/)
    } finally {
      await b.close()
    }
  })

  it('access "public": served without a credential; access "none": 404 on the main listener', async () => {
    const pub = await createTestBroker({ config: withMetrics({ access: 'public' }) })
    const none = await createTestBroker({ config: withMetrics({ access: 'none' }) })
    try {
      const res = await pub.app.request('/metrics')
      assert.equal(res.status, 200)
      assert.match(await res.text(), /# TYPE taskpass_http_requests_total counter/)
      const off = await none.app.request('/metrics', { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      assert.equal(off.status, 404)
      assert.equal(((await off.json()) as { error: string }).error, 'not_found')
    } finally {
      await pub.close()
      await none.close()
    }
  })

  it('a separate listener serves /metrics without a credential, and nothing else', async () => {
    const b = await createTestBroker({ config: withMetrics({ access: 'none', listen: { port: 0 } }) })
    assert.equal(b.deps.config.metrics.listen?.host, '127.0.0.1', 'loopback by default')
    const main = await listen(b.app, { host: '127.0.0.1', port: 0 })
    const side = await listen(createMetricsApp(b.deps), b.deps.config.metrics.listen!)
    try {
      assert.equal((await fetch(`http://127.0.0.1:${main.address.port}/healthz`)).status, 200)
      assert.equal((await fetch(`http://127.0.0.1:${main.address.port}/metrics`)).status, 404)
      const res = await fetch(`http://127.0.0.1:${side.address.port}/metrics`)
      assert.equal(res.status, 200)
      assert.match(await res.text(), /taskpass_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1/)
      for (const path of ['/healthz', '/token', '/admin/tasks']) {
        const other = await fetch(`http://127.0.0.1:${side.address.port}${path}`)
        assert.equal(other.status, 404, path)
        assert.equal(((await other.json()) as { error: string }).error, 'not_found')
      }
    } finally {
      await side.close()
      await main.close()
      await b.close()
    }
  })

  it('config names a bad metrics field', async () => {
    const base = testConfig(await testKeys())
    assert.throws(() => parseConfig({ ...base, metrics: { access: 'everyone' as never, listen: { port: 70000 } } }), (e: unknown) => e instanceof ConfigError && /metrics\.access/.test(e.message) && /metrics\.listen\.port/.test(e.message))
  })
})
