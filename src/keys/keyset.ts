import { createHash } from 'node:crypto'
import { CompactEncrypt, calculateJwkThumbprint, compactDecrypt, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose'
import { eq, inArray } from 'drizzle-orm'
import type { Clock } from '../clock.js'
import type { Database_ } from '../store/db.js'
import { signingKeys } from '../store/schema.js'

export type SigningAlg = 'ES256' | 'EdDSA'

/** How long verifiers may cache the JWKS (its `Cache-Control: max-age`), seconds. */
export const JWKS_MAX_AGE = 300

/** A rotation asked for before every verifier can have seen the next key. */
export class RotationTooEarly extends Error {
  readonly waitSeconds: number
  constructor(waitSeconds: number) {
    super(`the next key has been published for less than ${JWKS_MAX_AGE} s; retry in ${waitSeconds} s or force it`)
    this.name = 'RotationTooEarly'
    this.waitSeconds = waitSeconds
  }
}

export interface ActiveKey {
  kid: string
  alg: SigningAlg
  privateKey: CryptoKey
}

export interface KeySet {
  /** The key that signs now. */
  current(): ActiveKey
  /** RFC 7517 JWK Set: current, next (pre-published) and retired keys still within their publish window. */
  jwks(): { keys: JWK[] }
  /** Strong validator for the JWKS document. */
  etag(): string
  /** Public key for a kid we published, for verifying our own tokens (introspection, revocation). */
  publicKey(kid: string): CryptoKey | undefined
  /** Re-reads keys from the store (after a rotation by another process). */
  reload(): Promise<void>
}

export interface KeyStoreOptions {
  database: Database_
  clock: Clock
  kek: Uint8Array
  alg: SigningAlg
  /** How long a retired key stays published: the token ceiling plus clock skew. */
  retiredPublishSeconds: number
}

const enc = new TextEncoder()
const dec = new TextDecoder()

async function generate(alg: SigningAlg, kek: Uint8Array) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true, crv: alg === 'EdDSA' ? 'Ed25519' : undefined })
  const publicJwk = await exportJWK(publicKey)
  const privateJwk = await exportJWK(privateKey)
  // RFC 7638 thumbprint as kid: stable, derived from the key, collision-free in practice.
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256')
  const privateJwe = await new CompactEncrypt(enc.encode(JSON.stringify(privateJwk)))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid })
    .encrypt(kek)
  return { kid, publicJwk: { ...publicJwk, kid, alg, use: 'sig' } as JWK, privateJwe }
}

function insertKey(o: KeyStoreOptions, k: Awaited<ReturnType<typeof generate>>, state: 'next' | 'current') {
  const now = o.clock.now()
  o.database.db
    .insert(signingKeys)
    .values({ kid: k.kid, alg: o.alg, publicJwk: JSON.stringify(k.publicJwk), privateJwe: k.privateJwe, state, createdAt: now, activatedAt: state === 'current' ? now : null })
    .run()
}

/**
 * Makes sure a current and a next key exist (first start generates both), then loads them.
 */
export async function openKeySet(o: KeyStoreOptions): Promise<KeySet> {
  const states = o.database.db.select({ state: signingKeys.state }).from(signingKeys).all().map((r) => r.state)
  if (!states.includes('current')) insertKey(o, await generate(o.alg, o.kek), 'current')
  if (!states.includes('next')) insertKey(o, await generate(o.alg, o.kek), 'next')

  let active: ActiveKey
  let published: JWK[] = []
  let publicKeys = new Map<string, CryptoKey>()
  let etag = ''

  async function reload() {
    const now = o.clock.now()
    const rows = o.database.db.select().from(signingKeys).where(inArray(signingKeys.state, ['current', 'next', 'retired'])).all()
    const cur = rows.find((r) => r.state === 'current')
    if (!cur) throw new Error('no current signing key')
    const { plaintext } = await compactDecrypt(cur.privateJwe, o.kek)
    const privateKey = (await importJWK(JSON.parse(dec.decode(plaintext)) as JWK, cur.alg)) as CryptoKey
    const visible = rows.filter((r) => r.state !== 'retired' || (r.publishUntil ?? 0) > now)
    const nextKeys = new Map<string, CryptoKey>()
    for (const r of visible) nextKeys.set(r.kid, (await importJWK(JSON.parse(r.publicJwk) as JWK, r.alg)) as CryptoKey)
    // Order: current first, then next, then retired — verifiers that try keys in order hit the likely one first.
    const rank = { current: 0, next: 1, retired: 2 } as const
    published = visible.sort((a, b) => rank[a.state] - rank[b.state]).map((r) => JSON.parse(r.publicJwk) as JWK)
    active = { kid: cur.kid, alg: cur.alg as SigningAlg, privateKey }
    publicKeys = nextKeys
    etag = `"${createHash('sha256').update(JSON.stringify(published)).digest('base64url').slice(0, 22)}"`
  }
  await reload()

  return {
    current: () => active,
    jwks: () => ({ keys: published }),
    etag: () => etag,
    publicKey: (kid) => publicKeys.get(kid),
    reload,
  }
}

/**
 * Rotation: the pre-published next key starts signing, the current key retires but stays
 * published until every token it signed has expired, and a fresh next key is pre-published.
 * No verifier ever sees a token whose key it could not already fetch: a rotation is refused
 * until the next key has been published for a full JWKS cache lifetime, unless `force`d
 * (an emergency rotation after a key compromise, where speed beats smoothness).
 */
export async function rotateKeys(o: KeyStoreOptions, opts: { force?: boolean } = {}): Promise<{ retired: string; current: string; next: string }> {
  const fresh = await generate(o.alg, o.kek) // generate (async) outside the synchronous transaction
  const now = o.clock.now()
  return o.database.durably(() => {
    const rows = o.database.db.select().from(signingKeys).where(inArray(signingKeys.state, ['current', 'next'])).all()
    const cur = rows.find((r) => r.state === 'current')
    const next = rows.find((r) => r.state === 'next')
    if (!cur || !next) throw new Error('keyset not initialised')
    const published = now - next.createdAt
    if (!opts.force && published < JWKS_MAX_AGE) throw new RotationTooEarly(JWKS_MAX_AGE - published)
    o.database.db.update(signingKeys).set({ state: 'retired', retiredAt: now, publishUntil: now + o.retiredPublishSeconds }).where(eq(signingKeys.kid, cur.kid)).run()
    o.database.db.update(signingKeys).set({ state: 'current', activatedAt: now }).where(eq(signingKeys.kid, next.kid)).run()
    insertKey(o, fresh, 'next')
    return { retired: cur.kid, current: next.kid, next: fresh.kid }
  })
}
