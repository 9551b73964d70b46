import { createHash } from 'node:crypto'
import { CompactEncrypt, calculateJwkThumbprint, compactDecrypt, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose'
import type { Clock } from '../clock.js'
import { isUniqueViolation } from '../store/db.js'
import type { SigningKeyRow, Stores, TxStores } from '../store/stores.js'

export type SigningAlg = 'ES256' | 'EdDSA'
export type KeyState = SigningKeyRow['state']

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

/**
 * The broker's signing keys as the store has them. Every answer first looks whether another
 * process changed the key table ({@link StoreUpkeep.watch}) and, if so, reads it again before
 * answering: so a key revoked elsewhere never answers once the change is seen.
 */
export interface KeySet {
  /** The key that signs now. */
  current(): Promise<ActiveKey>
  /** RFC 7517 JWK Set: current, next and standby (pre-published) and retired keys still within their publish window. */
  jwks(): Promise<{ keys: JWK[] }>
  /** Strong validator for the JWKS document. */
  etag(): Promise<string>
  /** Public key for a kid we publish, for verifying our own tokens (introspection, revocation). Never a revoked key. */
  publicKey(kid: string): Promise<CryptoKey | undefined>
  /** Re-reads keys from the store: drops revoked and expired keys at once, then loads new ones. */
  reload(): Promise<void>
}

export interface KeyStoreOptions {
  stores: Stores
  clock: Clock
  kek: Uint8Array
  alg: SigningAlg
  /**
   * The token ceiling plus clock skew (`tokens.maxTtl + clockSkew`): how long a retired key stays
   * published, and how long after its revocation a key's tokens could still be presented.
   */
  retiredPublishSeconds: number
}

/**
 * What a promotion of a key to `current` means for verifiers that cached the JWKS before that key
 * was published: present only when it was published less than {@link JWKS_MAX_AGE} ago.
 */
export interface PromotionWarning {
  warning: string
  /** Upper bound, for a verifier that honours the JWKS max-age and does not refetch on an unknown `kid`. */
  verifiers_may_refuse_for_seconds: number
}

/** The answer of {@link rotateKeys}. */
export type KeyRotation = {
  /** kid that stopped signing (still published until its tokens expire). */
  retired: string
  /** kid now signing. */
  current: string
  /** kid that signs at the next rotation (pre-published). */
  next: string
  /** kid pre-published behind `next`. */
  standby: string
} & Partial<PromotionWarning>

const enc = new TextEncoder()
const dec = new TextDecoder()

type GeneratedKey = Awaited<ReturnType<typeof generateKey>>

/** A new key pair: kid = RFC 7638 thumbprint, the private half as a JWE under the KEK. */
export async function generateKey(alg: SigningAlg, kek: Uint8Array) {
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

function insertKey(o: KeyStoreOptions, tx: TxStores, k: GeneratedKey, state: 'current' | 'next' | 'standby'): Promise<void> {
  const now = o.clock.now()
  return tx.signingKeys.insert({
    kid: k.kid, alg: o.alg, publicJwk: JSON.stringify(k.publicJwk), privateJwe: k.privateJwe, state, createdAt: now,
    activatedAt: state === 'current' ? now : null, retiredAt: null, publishUntil: null,
  })
}

const SIGNING_QUEUE = ['current', 'next', 'standby'] as const

/**
 * First start: creates the signing states the store lacks. Keys are generated outside the write
 * transaction; inside it the states are read again, so that of two processes starting on one
 * empty store the second inserts nothing (and the unique index on signing states refuses a
 * second current key should anything else try).
 */
async function ensureSigningKeys(o: KeyStoreOptions): Promise<void> {
  const present = async (stores: TxStores) => new Set((await stores.signingKeys.all()).map((r) => r.state))
  const before = await present(o.stores)
  const missing = SIGNING_QUEUE.filter((state) => !before.has(state))
  if (missing.length === 0) return
  const fresh = await Promise.all(missing.map(() => generateKey(o.alg, o.kek)))
  try {
    await o.stores.durably(async (tx) => {
      const inside = await present(tx)
      for (const [i, state] of missing.entries()) if (!inside.has(state)) await insertKey(o, tx, fresh[i]!, state)
    })
  } catch (e) {
    // PostgreSQL: another instance inserted the same state between our read and our insert (the
    // unique index on signing states refused ours). Its keys are the ones to load.
    if (!isUniqueViolation(e)) throw e
  }
}

/** The keys that can sign now or later: their private halves are kept decrypted in memory. */
const SIGNING_STATES: readonly KeyState[] = SIGNING_QUEUE

/** Whether the JWKS publishes a key in this state at `now`: the signing queue, and retired keys until `publishUntil`. */
export function isPublished(r: { state: KeyState; publishUntil: number | null }, now: number): boolean {
  return SIGNING_STATES.includes(r.state) || (r.state === 'retired' && (r.publishUntil ?? 0) > now)
}

/**
 * Makes sure a current, a next and a standby key exist (first start generates all three), then
 * loads them.
 *
 * Changes made by another process (the CLI rotating or revoking a key) are seen at once: every
 * call checks SQLite's `PRAGMA data_version` — a counter of commits by *other* connections, read
 * without touching a table — and when it moved re-reads the (small) key table synchronously. A
 * revoked key stops signing, verifying and being published on the very next request; a promoted
 * key whose private half is already in memory (the next key always is) signs at once. Keys this
 * process has not loaded yet (a freshly generated standby) are imported in the background.
 */
export async function openKeySet(o: KeyStoreOptions): Promise<KeySet> {
  await ensureSigningKeys(o)

  const changed = o.stores.watch('keys')
  let active: ActiveKey | undefined
  let published: JWK[] = []
  let etag = ''
  const publicKeys = new Map<string, CryptoKey>()
  const privateKeys = new Map<string, ActiveKey>()

  /** Publishes what the rows say with the keys already in memory, drops everything else (no await: all at once). */
  function apply(rows: readonly SigningKeyRow[]): void {
    const now = o.clock.now()
    const visible = rows.filter((r) => isPublished(r, now))
    const visibleKids = new Set(visible.map((r) => r.kid))
    for (const kid of publicKeys.keys()) if (!visibleKids.has(kid)) publicKeys.delete(kid)
    const signing = new Set(rows.filter((r) => SIGNING_STATES.includes(r.state)).map((r) => r.kid))
    for (const kid of privateKeys.keys()) if (!signing.has(kid)) privateKeys.delete(kid)
    const cur = rows.find((r) => r.state === 'current')
    active = cur ? privateKeys.get(cur.kid) : undefined
    // Order: current, next, standby, then retired newest first — verifiers that try keys in order hit the likely one first.
    const rank = { current: 0, next: 1, standby: 2, retired: 3, revoked: 4 } as const
    published = visible
      .sort((a, b) => rank[a.state] - rank[b.state] || (b.retiredAt ?? 0) - (a.retiredAt ?? 0))
      .map((r) => JSON.parse(r.publicJwk) as JWK)
    etag = `"${createHash('sha256').update(JSON.stringify(published)).digest('base64url').slice(0, 22)}"`
  }

  /** Whether some published or signing key of `rows` is not in memory yet. */
  const lacking = (rows: readonly SigningKeyRow[]) =>
    rows.some((r) => (isPublished(r, o.clock.now()) && !publicKeys.has(r.kid)) || (SIGNING_STATES.includes(r.state) && !privateKeys.has(r.kid)))

  async function load(): Promise<void> {
    const rows = await o.stores.signingKeys.all()
    apply(rows) // first: a revoked key is gone before anything else is awaited
    const now = o.clock.now()
    for (const r of rows) {
      if (isPublished(r, now) && !publicKeys.has(r.kid)) publicKeys.set(r.kid, (await importJWK(JSON.parse(r.publicJwk) as JWK, r.alg)) as CryptoKey)
      if (SIGNING_STATES.includes(r.state) && !privateKeys.has(r.kid)) {
        const { plaintext } = await compactDecrypt(r.privateJwe, o.kek)
        const privateKey = (await importJWK(JSON.parse(dec.decode(plaintext)) as JWK, r.alg)) as CryptoKey
        privateKeys.set(r.kid, { kid: r.kid, alg: r.alg as SigningAlg, privateKey })
      }
    }
    // The rows may have changed while keys were imported: settle on what the store says now.
    apply(await o.stores.signingKeys.all())
  }

  /** Loads until the current key is in memory: another process may promote or create keys while we import. */
  async function loadCurrent(): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      await load()
      if (active) return
    }
    throw new Error('no current signing key')
  }

  // Loads may overlap (a background one and an explicit one): each only adds keys the store
  // lists and ends by applying what the store says, so the last to finish is right.
  const reload = () => load()

  // A change seen whose rows could not be read yet (the database busy): every use reads until one succeeds.
  let stale = false
  /** Before every answer: another process committed a key change → read the key table (a few rows) first. */
  async function check(): Promise<void> {
    if (!changed() && !stale) return
    stale = true
    const rows = await o.stores.signingKeys.all()
    stale = false
    apply(rows)
    // Keys we do not hold yet (a new standby, or a current key we never loaded) come in the background.
    if (lacking(rows)) reload().catch(() => {})
  }

  await loadCurrent()

  return {
    current: async () => {
      await check()
      // Only when another process changed the keyset twice before this one could load the new
      // current key: refusing to sign beats signing with a key that may have been revoked.
      if (!active) throw new Error('the current signing key is not loaded yet (the keyset changed); retry')
      return active
    },
    jwks: async () => {
      await check()
      return { keys: published }
    },
    etag: async () => {
      await check()
      return etag
    },
    publicKey: async (kid) => {
      await check()
      return publicKeys.get(kid)
    },
    reload,
  }
}

/** The warning a promotion of `promoted` (published at `createdAt`) carries at time `now`, if any. */
export function promotionWarning(kid: string, createdAt: number, now: number): PromotionWarning | undefined {
  const age = now - createdAt
  if (age >= JWKS_MAX_AGE) return undefined
  const wait = JWKS_MAX_AGE - age
  return {
    warning:
      `the new signing key ${kid} has been in the JWKS for only ${age} s: a verifier that cached the JWKS before it was published ` +
      `refuses new tokens until it fetches the JWKS again — at once if it refetches on an unknown kid and its refetch cooldown ` +
      `has passed, otherwise for up to ${wait} s (the JWKS max-age); tokens signed before stay valid`,
    verifiers_may_refuse_for_seconds: wait,
  }
}

type KeyRow = SigningKeyRow

/** The signing rows (current, next, standby) inside a transaction; the invariant is one of each. */
export async function signingRows(stores: Pick<TxStores, 'signingKeys'>): Promise<{ current: KeyRow; next: KeyRow; standby: KeyRow }> {
  const rows = await stores.signingKeys.all()
  const current = rows.find((r) => r.state === 'current')
  const next = rows.find((r) => r.state === 'next')
  const standby = rows.find((r) => r.state === 'standby')
  if (!current || !next || !standby) throw new Error('keyset not initialised')
  return { current, next, standby }
}

/**
 * Moves the queue one step inside the caller's transaction: `next` starts signing, `standby`
 * becomes next, `fresh` becomes the standby. The caller has already taken the current key out.
 */
export async function promoteNext(o: KeyStoreOptions, tx: TxStores, rows: { next: KeyRow; standby: KeyRow }, fresh: GeneratedKey, now: number): Promise<void> {
  await tx.signingKeys.update(rows.next.kid, { state: 'current', activatedAt: now })
  await tx.signingKeys.update(rows.standby.kid, { state: 'next' })
  await insertKey(o, tx, fresh, 'standby')
}

/** `standby` moves up to next and `fresh` becomes the standby (the next key was taken out). */
export async function replaceNext(o: KeyStoreOptions, tx: TxStores, rows: { standby: KeyRow }, fresh: GeneratedKey): Promise<void> {
  await tx.signingKeys.update(rows.standby.kid, { state: 'next' })
  await insertKey(o, tx, fresh, 'standby')
}

export function insertStandby(o: KeyStoreOptions, tx: TxStores, fresh: GeneratedKey): Promise<void> {
  return insertKey(o, tx, fresh, 'standby')
}

/**
 * Rotation: the pre-published next key starts signing, the current key retires but stays
 * published until every token it signed has expired, the standby key becomes next and a fresh
 * standby is pre-published. Two keys wait in the JWKS, so that no verifier ever sees a token whose
 * key it could not already fetch: a rotation is refused until the next key has been published
 * for a full JWKS cache lifetime; `force` rotates anyway and the answer then says, in `warning`
 * and `verifiers_may_refuse_for_seconds`, what verifiers that cached the JWKS earlier will see.
 * Because the standby was published one rotation earlier, a second forced rotation soon after
 * a first still promotes a key verifiers have had a full cache lifetime to see.
 */
export async function rotateKeys(o: KeyStoreOptions, opts: { force?: boolean } = {}): Promise<KeyRotation> {
  const fresh = await generateKey(o.alg, o.kek) // before the transaction, which holds the write lock
  const now = o.clock.now()
  return o.stores.durably(async (tx) => {
    const rows = await signingRows(tx)
    const published = now - rows.next.createdAt
    if (!opts.force && published < JWKS_MAX_AGE) throw new RotationTooEarly(JWKS_MAX_AGE - published)
    await tx.signingKeys.update(rows.current.kid, { state: 'retired', retiredAt: now, publishUntil: now + o.retiredPublishSeconds })
    await promoteNext(o, tx, rows, fresh, now)
    return { retired: rows.current.kid, current: rows.next.kid, next: rows.standby.kid, standby: fresh.kid, ...promotionWarning(rows.next.kid, rows.next.createdAt, now) }
  })
}
