/**
 * The broker's own token signer (src/tokens/sign.ts) against the verifiers a resource uses: every
 * token of many random claim sets verifies with jose `jwtVerify` and with oauth4webapi's RFC 9068
 * `validateJwtAccessToken`, its header and payload are the bytes jose's `SignJWT` writes for the
 * same claims (EdDSA signatures are deterministic, so the whole token is), and a changed byte or a
 * DER-encoded signature is refused.
 */
import assert from 'node:assert/strict'
import { randomInt, sign as nodeSign, KeyObject } from 'node:crypto'
import { describe, it } from 'node:test'
import { decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose'
import * as oauth from 'oauth4webapi'
import type { SigningAlg } from '../src/keys/keyset.js'
import { signOwnJwt } from '../src/tokens/sign.js'
import { ACCESS_TOKEN_TYP, type TaskTokenClaims } from '../src/tokens/issue.js'

const TOKENS_PER_ALG = 1500
const ISSUER = 'https://broker.example'
const AUDIENCE = 'https://notes.example/mcp'

// Strings that exercise JSON escaping and UTF-8: quotes, backslashes, controls, line separators,
// non-ASCII letters, astral-plane characters.
const ALPHABET = ['a', 'Z', '0', '-', '_', ' ', '"', '\\', '/', '\n', '\u0001', '\u2028', 'é', 'ß', '漢', '😀', '\u{10FFFF}']
const text = (max = 12) => Array.from({ length: randomInt(1, max + 1) }, () => ALPHABET[randomInt(ALPHABET.length)]).join('')
const maybe = <T>(v: () => T): T | undefined => (randomInt(2) === 0 ? v() : undefined)

function claimsFor(now: number, withCnf: boolean): TaskTokenClaims {
  const claims: TaskTokenClaims = {
    iss: ISSUER,
    sub: text(),
    sub_id: { format: 'iss_sub', iss: `https://idp.example/${text(4)}`, sub: text() },
    aud: AUDIENCE,
    client_id: text(),
    act: { sub: `spiffe://example.org/${text(6)}`, ...(randomInt(2) ? { act: { sub: text() } } : {}) },
    scope: Array.from({ length: randomInt(1, 4) }, () => text(6).replace(/[ "\\]/g, 'x')).join(' '),
    task_id: text(20),
    jti: text(22),
    iat: now,
    nbf: now,
    exp: now + randomInt(60, 3600),
  }
  const parent = maybe(() => text(20))
  if (parent !== undefined) claims.parent_task_id = parent
  const sid = maybe(() => text())
  if (sid !== undefined) claims.sid = sid
  if (withCnf) claims.cnf = { jkt: text(43) }
  const tools = maybe(() => [{ type: 'mcp_tools', tools: Array.from({ length: randomInt(1, 4) }, () => text(8)) }])
  if (tools !== undefined) claims.authorization_details = tools as unknown as TaskTokenClaims['authorization_details']
  return claims
}

async function keyFor(alg: SigningAlg) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true, crv: alg === 'EdDSA' ? 'Ed25519' : undefined })
  const kid = `kid-${alg}-${text(4).replace(/[^a-zA-Z0-9]/g, 'k')}`
  return { kid, alg, publicKey, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } }
}

const withJwks = (jwks: object) => ({ [oauth.customFetch]: async () => new Response(JSON.stringify(jwks), { headers: { 'content-type': 'application/json' } }) })

for (const alg of ['ES256', 'EdDSA'] as const) {
  describe(`own signing: ${alg}`, () => {
    it(`${TOKENS_PER_ALG} tokens of random claims verify with jose and oauth4webapi, and are the bytes SignJWT writes`, async () => {
      const key = await keyFor(alg)
      const as: oauth.AuthorizationServer = { issuer: ISSUER, jwks_uri: `${ISSUER}/.well-known/jwks.json` }
      const options = withJwks({ keys: [key.jwk] })
      const now = Math.floor(Date.now() / 1000)
      let throughOauth4webapi = 0
      for (let i = 0; i < TOKENS_PER_ALG; i++) {
        const claims = claimsFor(now, i % 4 === 3)
        const token = await signOwnJwt(key, ACCESS_TOKEN_TYP, claims)

        assert.deepEqual(decodeProtectedHeader(token), { alg, kid: key.kid, typ: ACCESS_TOKEN_TYP })
        const { payload, protectedHeader } = await jwtVerify(token, key.publicKey, { issuer: ISSUER, audience: AUDIENCE, typ: ACCESS_TOKEN_TYP, algorithms: [alg], currentDate: new Date(now * 1000) })
        assert.deepEqual(payload, JSON.parse(JSON.stringify(claims)))
        assert.equal(protectedHeader.kid, key.kid)

        const byJose = await new SignJWT({ ...claims }).setProtectedHeader({ alg, kid: key.kid, typ: ACCESS_TOKEN_TYP }).sign(key.privateKey)
        if (alg === 'EdDSA') assert.equal(token, byJose)
        else assert.equal(token.slice(0, token.lastIndexOf('.')), byJose.slice(0, byJose.lastIndexOf('.')))
        assert.equal(Buffer.from(token.slice(token.lastIndexOf('.') + 1), 'base64url').length, 64)

        // A DPoP-bound token (cnf) asks oauth4webapi for a proof; those are checked by jose above.
        if (claims.cnf) continue
        const request = new Request(AUDIENCE, { headers: { authorization: `Bearer ${token}` } })
        const validated = await oauth.validateJwtAccessToken(as, request, AUDIENCE, options)
        assert.equal(validated.jti, claims.jti)
        assert.equal(validated.sub, claims.sub)
        throughOauth4webapi++
      }
      assert.ok(throughOauth4webapi > TOKENS_PER_ALG / 2, `${throughOauth4webapi} through oauth4webapi`)
    })

    it('a changed byte of the header, payload or signature is refused; so is a DER-encoded signature', async () => {
      const key = await keyFor(alg)
      const now = Math.floor(Date.now() / 1000)
      const token = await signOwnJwt(key, ACCESS_TOKEN_TYP, claimsFor(now, false))
      const verify = (t: string) => jwtVerify(t, key.publicKey, { typ: ACCESS_TOKEN_TYP, algorithms: [alg], currentDate: new Date(now * 1000) })
      await verify(token)
      const [h, p, s] = token.split('.') as [string, string, string]
      const flip = (part: string, at: number) => {
        const bytes = Buffer.from(part, 'base64url')
        bytes[at % bytes.length]! ^= 1
        return bytes.toString('base64url')
      }
      for (const changed of [`${flip(h, 3)}.${p}.${s}`, `${h}.${flip(p, 7)}.${s}`, `${h}.${p}.${flip(s, 5)}`]) {
        await assert.rejects(verify(changed))
      }
      if (alg === 'ES256') {
        const der = nodeSign('sha256', Buffer.from(`${h}.${p}`), { key: KeyObject.from(key.privateKey), dsaEncoding: 'der' })
        await assert.rejects(verify(`${h}.${p}.${der.toString('base64url')}`))
      }
    })

    it('a key of another kind than its alg says is refused before anything is signed', async () => {
      const other = await keyFor(alg === 'ES256' ? 'EdDSA' : 'ES256')
      assert.throws(() => signOwnJwt({ alg, kid: 'mislabelled', privateKey: other.privateKey }, ACCESS_TOKEN_TYP, {}), /is not a/)
    })
  })
}
