/**
 * The floor baselines: a bare hono endpoint on @hono/node-server that reads the form body, signs
 * one ES256 JWT (jose) and inserts one row with a prepared statement into a SQLite table
 * (better-sqlite3, WAL, synchronous=NORMAL: one durable autocommit per request).
 * With `verify: true` ("floor+2verify") it first verifies the request's subject and actor tokens
 * with jose (ES256, issuer/audience/exp checks, no caching).
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import type { Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createAdaptorServer } from '@hono/node-server'
import Database from 'better-sqlite3'
import { Hono } from 'hono'
import { createLocalJWKSet, generateKeyPair, jwtVerify, SignJWT } from 'jose'
import { ACCESS_TOKEN_TYPE, type PublicKeys } from '../lib/fixtures.js'
import { announceReady, exitWithParent, listenOn, readServerConfig } from '../lib/server-child.js'

export interface FloorServerConfig {
  verify: boolean
  /** Issuer of the issued tokens, and the audience incoming tokens must carry. */
  issuer: string
  userIssuer: string
  keys: PublicKeys
}

/** UUIDv7 (RFC 9562 §5.7): time-ordered, as a broker should use for its token ids. */
function uuidv7(): string {
  const ms = Date.now()
  const b = randomBytes(16)
  b.writeUIntBE(ms, 0, 6)
  b[6] = 0x70 | (b[6]! & 0x0f)
  b[8] = 0x80 | (b[8]! & 0x3f)
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

const config = readServerConfig<FloorServerConfig>()
const dir = mkdtempSync(join(tmpdir(), 'taskpass-bench-floor-'))
const sqlite = new Database(join(dir, 'floor.db'))
sqlite.pragma('journal_mode = WAL')
sqlite.pragma('synchronous = NORMAL')
sqlite.exec('create table tokens (jti text primary key, sub text not null, aud text not null, scope text not null, iat integer not null, exp integer not null)')
const insert = sqlite.prepare('insert into tokens (jti, sub, aud, scope, iat, exp) values (?, ?, ?, ?, ?, ?)')

const { privateKey } = await generateKeyPair('ES256')
const userKeys = createLocalJWKSet({ keys: [config.keys.user] })
const svidKeys = createLocalJWKSet({ keys: [config.keys.spiffe] })

const app = new Hono()
app.post('/token', async (c) => {
  const params = new URLSearchParams(await c.req.text())
  let sub = 'client'
  if (config.verify) {
    const subject = await jwtVerify(params.get('subject_token') ?? '', userKeys, { issuer: config.userIssuer, audience: config.issuer, algorithms: ['ES256'], requiredClaims: ['exp'] })
    await jwtVerify(params.get('actor_token') ?? '', svidKeys, { audience: config.issuer, algorithms: ['ES256'], requiredClaims: ['exp', 'sub', 'aud'] })
    sub = subject.payload.sub ?? sub
  }
  const aud = params.get('resource') ?? 'urn:bench'
  const scope = params.get('scope') ?? ''
  const now = Math.floor(Date.now() / 1000)
  const exp = now + 300
  const jti = uuidv7()
  const accessToken = await new SignJWT({ scope, client_id: 'agent-a' })
    .setProtectedHeader({ alg: 'ES256', kid: 'floor-1', typ: 'at+jwt' })
    .setIssuer(config.issuer)
    .setSubject(sub)
    .setAudience(aud)
    .setJti(jti)
    .setIssuedAt(now)
    .setExpirationTime(exp)
    .sign(privateKey)
  insert.run(jti, sub, aud, scope, now, exp)
  return c.json({ access_token: accessToken, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: 300, scope }, 200, { 'Cache-Control': 'no-store' })
})
app.onError((err, c) => c.json({ error: 'invalid_request', error_description: err.message }, 400))

const server = createAdaptorServer({ fetch: app.fetch })
exitWithParent(() => {
  server.close()
  sqlite.close()
  rmSync(dir, { recursive: true, force: true })
})
announceReady(await listenOn(server as Server, 0))
