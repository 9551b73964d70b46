/**
 * Introspection's fast path keeps its guarantees: a token's signature is verified once and served
 * from the verified-token cache, the resource's credential once and served from the verified-pair
 * cache, yet a revocation — of the token, its task, its session or its signing key, by this process
 * or by another one on the same SQLite file — makes the very next introspection `{active:false}`,
 * and a credential replaced through the catalog stops working at once.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { argon2Hasher } from '../src/broker.js'
import type { ConfigInput } from '../src/config.js'
import type { TokenState } from '../src/store/stores.js'
import { introspectToken } from '../src/tokens/introspect.js'
import type { OwnTokenClaims } from '../src/tokens/own-token.js'
import { ADMIN_KEY, adminRequest as admin, createTestBroker, NOTES, NOTES_SECRET, testConfig, testKeys, type TestBroker } from './harness.js'

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

async function introspect(b: TestBroker, token: string, authorization = basic('notes-mcp', NOTES_SECRET)): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await b.post('/introspect', { token }, { authorization })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

/** A token exchanged now, introspected active twice (so its signature and the credential are cached). */
async function cachedActiveToken(b: TestBroker): Promise<{ token: string; taskId: string; kid: string }> {
  const res = await b.exchange()
  assert.equal(res.status, 200)
  const { access_token: token, task_id: taskId } = (await res.json()) as { access_token: string; task_id: string }
  for (let i = 0; i < 2; i++) {
    const seen = await introspect(b, token)
    assert.equal(seen.status, 200)
    assert.equal(seen.body.active, true)
  }
  return { token, taskId, kid: decodeProtectedHeader(token).kid! }
}

/** A broker on a SQLite file, and the configuration file another process (the CLI) opens it with. */
async function onFile(fn: (b: TestBroker, configFile: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'taskpass-introspect-'))
  const input: ConfigInput = { ...testConfig(await testKeys()), database: join(dir, 'broker.db'), keys: { kek: randomBytes(32).toString('base64url') } }
  const configFile = join(dir, 'taskpass.json')
  writeFileSync(configFile, JSON.stringify(input))
  const b = await createTestBroker({ config: () => input })
  try {
    await fn(b, configFile)
  } finally {
    await b.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The admin CLI: another process on the same database file. */
function cli(configFile: string, ...args: string[]): void {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args, '--config', configFile], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(run.status, 0, run.stderr)
}

describe('introspection: revoked means inactive at the very next call, cached token or not', () => {
  const sameProcess: { name: string; revoke: (b: TestBroker, t: { token: string; taskId: string; kid: string }) => Promise<void> }[] = [
    {
      name: 'the token revoked (POST /revoke)',
      revoke: async (b, t) => assert.equal((await b.post('/revoke', { token: t.token }, { authorization: basic('notes-mcp', NOTES_SECRET) })).status, 200),
    },
    { name: 'its task revoked (POST /admin/tasks/{id}/revoke)', revoke: async (b, t) => assert.equal((await admin(b, 'POST', `/admin/tasks/${t.taskId}/revoke`)).status, 200) },
    {
      name: 'its session revoked (POST /admin/sessions/revoke)',
      revoke: async (b) => assert.equal((await admin(b, 'POST', '/admin/sessions/revoke', { issuer: 'https://idp.test.example', sid: 'sess-1' })).status, 200),
    },
    { name: 'its signing key revoked (POST /admin/keys/{kid}/revoke)', revoke: async (b, t) => assert.equal((await admin(b, 'POST', `/admin/keys/${t.kid}/revoke`)).status, 200) },
  ]
  for (const c of sameProcess) {
    it(`${c.name}: the next introspection is {active:false}, nothing else`, () =>
      onFile(async (b) => {
        const t = await cachedActiveToken(b)
        await c.revoke(b, t)
        assert.deepEqual(await introspect(b, t.token), { status: 200, body: { active: false } })
      }))
  }

  const otherProcess: { name: string; args: (t: { token: string; taskId: string; kid: string }) => string[] }[] = [
    { name: 'its task revoked by the CLI', args: (t) => ['tasks', 'revoke', t.taskId] },
    { name: 'its signing key revoked by the CLI', args: (t) => ['keys', 'revoke', t.kid] },
  ]
  for (const c of otherProcess) {
    it(`${c.name} (another process, same SQLite file): the next introspection is {active:false}`, () =>
      onFile(async (b, configFile) => {
        const t = await cachedActiveToken(b)
        const other = await cachedActiveToken(b) // another task's token, untouched by a task revocation
        cli(configFile, ...c.args(t))
        assert.deepEqual(await introspect(b, t.token), { status: 200, body: { active: false } })
        assert.equal((await introspect(b, other.token)).body.active, c.args(t)[0] === 'tasks')
      }))
  }

  it('control: an untouched cached token stays active, with the same claims on every call', () =>
    onFile(async (b) => {
      const t = await cachedActiveToken(b)
      const first = await introspect(b, t.token)
      const again = await introspect(b, t.token)
      assert.deepEqual(again, first)
      assert.equal(first.body.jti, decodeJwt(t.token).jti)
      assert.equal(first.body.aud, NOTES)
    }))
})

describe('introspection: a resource credential replaced through the catalog stops working at once', () => {
  it('the old secret is refused (401 invalid_client) on the next request though it was cached; the new one works', async () => {
    const b = await createTestBroker()
    try {
      const docs = 'https://docs.test.example/mcp'
      const created = await admin(b, 'POST', '/admin/resources', { uri: docs, scopes: ['docs:read'], credential: { clientId: 'docs-mcp', secretHash: await argon2Hasher.hash('docs-secret-old-0123456789') } })
      assert.equal(created.status, 201)
      const t = await cachedActiveToken(b)
      // Authenticated (a NOTES token is not for docs: inactive, but 200), twice: the pair is cached.
      for (let i = 0; i < 2; i++) assert.deepEqual(await introspect(b, t.token, basic('docs-mcp', 'docs-secret-old-0123456789')), { status: 200, body: { active: false } })
      const replaced = await admin(b, 'PUT', `/admin/resources/${encodeURIComponent(docs)}`, { uri: docs, scopes: ['docs:read'], credential: { clientId: 'docs-mcp', secretHash: await argon2Hasher.hash('docs-secret-new-0123456789') } })
      assert.equal(replaced.status, 200, JSON.stringify(replaced.body))
      const old = await introspect(b, t.token, basic('docs-mcp', 'docs-secret-old-0123456789'))
      assert.equal(old.status, 401)
      assert.equal(old.body.error, 'invalid_client')
      assert.deepEqual(await introspect(b, t.token, basic('docs-mcp', 'docs-secret-new-0123456789')), { status: 200, body: { active: false } })
      // The other resources' cached credentials are unaffected by the rebuild (verified again, then cached).
      assert.equal((await introspect(b, t.token)).body.active, true)
    } finally {
      await b.close()
    }
  })
})

describe('introspection: the row answers for the signing key', () => {
  const claims = { iss: 'i', sub: 's', aud: NOTES, jti: 'j1', exp: 2_000_000_000, iat: 1 } as OwnTokenClaims
  const caller = { uri: NOTES } as Parameters<typeof introspectToken>[1]
  const decide = (row: TokenState | undefined, keysetVerifies: boolean) =>
    introspectToken(
      {
        clock: { now: () => 1_800_000_000, nowMs: () => 1_800_000_000_000 },
        stores: { introspection: { tokenState: async () => row } },
        ownTokens: { verifyRecorded: async () => ({ kid: 'k1', claims }), verify: async () => (keysetVerifies ? claims : undefined) },
      },
      caller,
      'token',
    )
  const cases: { name: string; row: TokenState | undefined; keyset: boolean; active: boolean }[] = [
    { name: 'the row of the same key, active', row: { status: 'active', exp: 2_000_000_000, aud: NOTES, kid: 'k1' }, keyset: false, active: true },
    { name: 'a row signed by another key (a token forged with a jti of another key\'s token)', row: { status: 'active', exp: 2_000_000_000, aud: NOTES, kid: 'k2' }, keyset: true, active: false },
    { name: 'a row without its key, the keyset no longer verifying the token', row: { status: 'active', exp: 2_000_000_000, aud: NOTES, kid: null }, keyset: false, active: false },
    { name: 'a row without its key, the keyset verifying it', row: { status: 'active', exp: 2_000_000_000, aud: NOTES, kid: null }, keyset: true, active: true },
    { name: 'a revoked row', row: { status: 'revoked', exp: 2_000_000_000, aud: NOTES, kid: 'k1' }, keyset: true, active: false },
    { name: 'an expired row', row: { status: 'active', exp: 1_800_000_000, aud: NOTES, kid: 'k1' }, keyset: true, active: false },
    { name: 'no row', row: undefined, keyset: true, active: false },
  ]
  for (const c of cases) {
    it(`${c.name}: ${c.active ? 'active' : '{active:false}'}`, async () => {
      const answer = await decide(c.row, c.keyset)
      if (c.active) assert.equal(answer.active, true)
      else assert.deepEqual(answer, { active: false })
    })
  }
})
