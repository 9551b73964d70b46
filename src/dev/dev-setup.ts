import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose'
import type { Clock } from '../clock.js'
import type { ConfigInput } from '../config.js'
import type { Hasher } from '../http/client-auth.js'
import { randomSecret, uuidv7 } from '../ids.js'

/**
 * Dev mode: a configuration that works out of the box. A built-in dev subject issuer (users)
 * and a dev SPIFFE trust domain (workloads) whose private keys live in the data directory,
 * a demo workload that may delegate to a second one (a helper agent, read-only), and one demo
 * resource. Never use it in production.
 */
export const DEV = {
  issuer: 'http://127.0.0.1:8787',
  userIssuer: 'https://users.dev.taskpass.local',
  trustDomain: 'dev.taskpass.local',
  workloadId: 'demo-agent',
  spiffeId: 'spiffe://dev.taskpass.local/agent/demo',
  /** The second dev workload: the demo agent may open sub-tasks for it; it may only read. */
  helperWorkloadId: 'demo-helper',
  helperSpiffeId: 'spiffe://dev.taskpass.local/agent/demo-helper',
  resource: 'http://127.0.0.1:8788/mcp',
  /** The dev users who may sign in on the dev sign-in page (the authorization-code flow). */
  users: ['alice', 'bob'],
  /** The workload every MCP client with an https metadata document is, in dev mode. */
  clientsWorkloadId: 'mcp-clients',
  resourceClientId: 'demo-mcp',
  scopes: ['notes:read', 'notes:write'],
} as const

export interface DevMaterial {
  dir: string
  userKey: JWK
  spiffeKey: JWK
  resourceSecret: string
  adminKey: string
  /** The dev users' one password on the dev sign-in page. */
  userPassword: string
}

async function privateJwk(path: string): Promise<JWK> {
  if (!existsSync(path)) {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const jwk = await exportJWK(privateKey)
    writeFileSync(path, JSON.stringify({ ...jwk, kid: randomSecret(8), alg: 'ES256' }), { mode: 0o600 })
  }
  return JSON.parse(readFileSync(path, 'utf8')) as JWK
}

function secretFile(path: string, prefix: string): string {
  if (!existsSync(path)) writeFileSync(path, `${prefix}${randomSecret()}\n`, { mode: 0o600 })
  return readFileSync(path, 'utf8').trim()
}

/** Creates (first run) or reads the dev keys and secrets in `dir`. */
export async function ensureDevMaterial(dir: string): Promise<DevMaterial> {
  mkdirSync(dir, { recursive: true })
  return {
    dir,
    userKey: await privateJwk(join(dir, 'dev-user-issuer.jwk.json')),
    spiffeKey: await privateJwk(join(dir, 'dev-spiffe-bundle.jwk.json')),
    resourceSecret: secretFile(join(dir, 'dev-resource-secret'), 'tps_'),
    adminKey: secretFile(join(dir, 'dev-admin-key'), 'tpa_'),
    userPassword: secretFile(join(dir, 'dev-user-password'), ''),
  }
}

function publicOf(jwk: JWK): JWK {
  const { d: _d, ...pub } = jwk
  return pub
}

/** The dev configuration (secrets hashed with argon2id, as in any config). */
export async function devConfig(m: DevMaterial, hasher: Hasher): Promise<ConfigInput> {
  return {
    issuer: DEV.issuer,
    database: join(m.dir, 'taskpass.db'),
    subjectIssuers: [
      {
        issuer: DEV.userIssuer,
        jwks: { keys: [publicOf(m.userKey) as Record<string, unknown>] },
        // The dev sign-in page (the authorization-code flow): the dev users, one random password.
        login: { kind: 'dev', users: [...DEV.users], passwordSha256: createHash('sha256').update(m.userPassword).digest('base64url') },
      },
    ],
    workloadIssuers: [{ kind: 'spiffe', trustDomain: DEV.trustDomain, jwks: { keys: [{ ...publicOf(m.spiffeKey), use: 'jwt-svid' }] } }],
    workloads: [
      {
        id: DEV.workloadId,
        attestation: { issuer: `spiffe://${DEV.trustDomain}`, subject: DEV.spiffeId },
        grants: [{ resource: DEV.resource, scopes: [...DEV.scopes] }],
        delegateTo: [DEV.helperWorkloadId],
      },
      {
        id: DEV.helperWorkloadId,
        attestation: { issuer: `spiffe://${DEV.trustDomain}`, subject: DEV.helperSpiffeId },
        grants: [{ resource: DEV.resource, scopes: ['notes:read'] }],
      },
      {
        // Any MCP client known by an https Client ID Metadata Document, after a dev user's consent.
        id: DEV.clientsWorkloadId,
        oauthClient: { clientId: { glob: 'https://**' } },
        grants: [{ resource: DEV.resource, scopes: [...DEV.scopes] }],
      },
    ],
    // Dev mode runs everything on this machine: metadata documents may be served from loopback.
    // and clients without a metadata document (most desktop MCP clients) may register (RFC 7591).
    authorization: { clientMetadata: { allowLoopback: true }, dynamicRegistration: { workload: DEV.clientsWorkloadId } },
    resources: [{ uri: DEV.resource, scopes: [...DEV.scopes], credential: { clientId: DEV.resourceClientId, secretHash: await hasher.hash(m.resourceSecret) } }],
    admin: { apiKeyHashes: [await hasher.hash(m.adminKey)] },
  }
}

/** A dev user's session token, as the built-in dev issuer would mint it. */
export async function mintDevSessionToken(m: DevMaterial, clock: Clock, opts: { user?: string; audience?: string; ttl?: number } = {}): Promise<string> {
  const now = clock.now()
  return new SignJWT({ sid: uuidv7(clock), name: opts.user ?? 'alice' })
    .setProtectedHeader({ alg: 'ES256', kid: m.userKey.kid!, typ: 'JWT' })
    .setIssuer(DEV.userIssuer)
    .setSubject(opts.user ?? 'alice')
    .setAudience(opts.audience ?? DEV.issuer)
    .setIssuedAt(now)
    .setExpirationTime(now + (opts.ttl ?? 3600))
    .sign(await importJWK(m.userKey, 'ES256'))
}

/** A JWT-SVID for a dev workload (the demo agent unless `spiffeId` says otherwise), as a SPIFFE agent in the dev trust domain would issue it. */
export async function mintDevSvid(m: DevMaterial, clock: Clock, opts: { audience?: string; ttl?: number; spiffeId?: string } = {}): Promise<string> {
  const now = clock.now()
  return new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', kid: m.spiffeKey.kid!, typ: 'JWT' })
    .setSubject(opts.spiffeId ?? DEV.spiffeId)
    .setAudience(opts.audience ?? DEV.issuer)
    .setIssuedAt(now)
    .setExpirationTime(now + (opts.ttl ?? 300))
    .sign(await importJWK(m.spiffeKey, 'ES256'))
}
