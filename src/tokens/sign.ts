/**
 * Signs the broker's own task tokens (a JWS compact serialisation, RFC 7515 §7.1) with node:crypto:
 * the protected header serialised once per key, then per token one JSON serialisation, one
 * base64url and one signature, without jose's SignJWT on the exchange's hot path. The signature
 * itself is computed on libuv's threadpool (node:crypto's `sign` with a callback), as WebCrypto
 * computes jose's: the event loop only hands the job over and takes its answer. Only our own tokens are signed here; every verification of a
 * token, ours or anyone's, stays with jose. test/own-signing.test.ts checks thousands of these
 * tokens with jose and oauth4webapi.
 */
import { KeyObject, sign } from 'node:crypto'
import type { SigningAlg } from '../keys/keyset.js'

/** One signing key as node:crypto uses it, with its encoded protected header. */
interface Signer {
  alg: SigningAlg
  kid: string
  typ: string
  key: KeyObject
  /** base64url(UTF-8(JSON(header))) and the '.' that follows it. */
  prefix: string
}

// Per imported key: the key set keeps a key's CryptoKey for as long as the key signs.
const signers = new WeakMap<CryptoKey, Signer>()

function signerFor(alg: SigningAlg, kid: string, typ: string, privateKey: CryptoKey): Signer {
  const known = signers.get(privateKey)
  if (known && known.alg === alg && known.kid === kid && known.typ === typ) return known
  if (alg !== 'ES256' && alg !== 'EdDSA') throw new Error(`no signer for alg ${String(alg)}`)
  const key = KeyObject.from(privateKey)
  const expected = alg === 'ES256' ? 'ec' : 'ed25519'
  if (key.asymmetricKeyType !== expected || (alg === 'ES256' && key.asymmetricKeyDetails?.namedCurve !== 'prime256v1')) {
    throw new Error(`the key ${kid} is not a ${alg} key`)
  }
  const signer = { alg, kid, typ, key, prefix: `${Buffer.from(JSON.stringify({ alg, kid, typ })).toString('base64url')}.` }
  signers.set(privateKey, signer)
  return signer
}

/**
 * `header.payload.signature` for these claims: ES256 as the 64-byte R‖S of RFC 7518 §3.4
 * (`ieee-p1363`, not DER), EdDSA as Ed25519's 64 bytes (RFC 8037 §3.1).
 */
export function signOwnJwt(key: { alg: SigningAlg; kid: string; privateKey: CryptoKey }, typ: string, claims: object): Promise<string> {
  const s = signerFor(key.alg, key.kid, typ, key.privateKey)
  const input = s.prefix + Buffer.from(JSON.stringify(claims)).toString('base64url')
  return new Promise((resolve, reject) => {
    const done = (error: Error | null, signature: Buffer) => (error ? reject(error) : resolve(`${input}.${signature.toString('base64url')}`))
    if (s.alg === 'ES256') sign('sha256', Buffer.from(input), { key: s.key, dsaEncoding: 'ieee-p1363' }, done)
    else sign(null, Buffer.from(input), s.key, done)
  })
}
