import { readFileSync } from 'node:fs'
import { compactVerify, createLocalJWKSet, type JSONWebKeySet } from 'jose'

/**
 * Checks a task's evidence offline: `npx tsx examples/verify-evidence.ts evidence.jsonl jwks.json`
 * (the export from `GET /admin/tasks/{id}/evidence` or `npm run cli -- tasks evidence <id>`, and the
 * broker's JWKS from `/.well-known/jwks.json`, kept with it). Prints the records it vouches for.
 */
export async function verifyEvidence(evidence: string, jwks: JSONWebKeySet): Promise<Record<string, unknown>[]> {
  const lines = evidence.trimEnd().split('\n')
  const last = JSON.parse(lines.at(-1)!) as { type?: string; jws?: string }
  if (last.type !== 'signature' || typeof last.jws !== 'string') throw new Error('no signature line')
  const signed = lines.slice(0, -1).map((l) => l + '\n').join('')
  const [header, detached, signature] = last.jws.split('.')
  if (detached !== '') throw new Error('the signature is not detached')
  const { protectedHeader } = await compactVerify(`${header}.${Buffer.from(signed).toString('base64url')}.${signature}`, createLocalJWKSet(jwks))
  if (protectedHeader.typ !== 'taskpass-evidence+jsonl') throw new Error(`not taskpass evidence: typ ${protectedHeader.typ}`)
  return lines.slice(0, -1).map((l) => JSON.parse(l) as Record<string, unknown>)
}

if (process.argv[1]?.endsWith('verify-evidence.ts') && process.argv.length === 4) {
  const records = await verifyEvidence(readFileSync(process.argv[2]!, 'utf8'), JSON.parse(readFileSync(process.argv[3]!, 'utf8')) as JSONWebKeySet)
  for (const r of records) console.log(`${r.type}\t${r.action ?? r.status ?? r.kind ?? ''}\t${r.reason ?? r.jti ?? ''}`)
}
