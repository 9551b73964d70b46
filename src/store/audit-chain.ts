import { createHash } from 'node:crypto'
import type { auditEvents } from './schema.js'

type AuditEventRow = typeof auditEvents.$inferSelect
type AuditRow = typeof auditEvents.$inferInsert

/**
 * The audit log as evidence: every row carries the hash of the one before it (`prev_hash`) and its
 * own (`hash`, SHA-256 over its content and `prev_hash`). Editing a row changes its hash; deleting
 * one breaks the link of the next; both are found by {@link verifyChain}. Retention prunes the
 * oldest rows and records the hash of the last one it removed as the chain's anchor, so what is
 * left still verifies. The chain proves nothing against someone who can rewrite it whole: record
 * its head (`audit verify` prints it) somewhere the database's writers cannot reach.
 */

/** The content a row's hash covers, in a fixed order (the id is the order of the chain, not part of it). */
export function auditHash(prevHash: string | null, row: Required<Omit<AuditRow, 'id' | 'prevHash' | 'hash' | 'detail'>> & Pick<AuditRow, 'detail'>): string {
  const content: unknown[] = [prevHash, row.at, row.action, row.decision, row.reason, row.error, row.userSub, row.workloadId, row.taskId, row.jti, row.resource, row.policyVersion, row.policies]
  // Appended only when present: the rows written before the column existed keep their hashes.
  if (row.detail !== null && row.detail !== undefined) content.push(row.detail)
  return createHash('sha256').update(JSON.stringify(content)).digest('hex')
}

export type ChainProblem = 'edited' | 'unlinked' | 'unchained'

export interface ChainReport {
  ok: boolean
  /** Rows checked (after the anchor, or from the first row). */
  rows: number
  /** Rows written before the chain existed, at its start (not evidence; reported, not failed). */
  unchained: number
  /** The last row's hash: record it elsewhere to pin the log as it is now. */
  head: string | null
  /** The first bad row, when `ok` is false. */
  first_bad?: { id: number; problem: ChainProblem; detail: string }
}

/**
 * Checks the chain from `anchor` (the hash of the last pruned row, or null when nothing was
 * pruned), reading rows in id order through `page` (batches, so a long log costs bounded memory).
 */
export function verifyChain(anchor: string | null, page: (afterId: number, limit: number) => AuditEventRow[]): ChainReport {
  const check = chainCheck(anchor)
  for (;;) {
    const batch = page(check.after(), 1000)
    if (batch.length === 0) return check.report()
    const bad = check.rows(batch)
    if (bad) return bad
  }
}

/** {@link verifyChain} over a store that answers through promises (PostgreSQL). */
export async function verifyChainAsync(anchor: string | null, page: (afterId: number, limit: number) => Promise<AuditEventRow[]>): Promise<ChainReport> {
  const check = chainCheck(anchor)
  for (;;) {
    const batch = await page(check.after(), 1000)
    if (batch.length === 0) return check.report()
    const bad = check.rows(batch)
    if (bad) return bad
  }
}

/** The chain check's state between batches: `rows` returns the report of the first bad row, if any. */
function chainCheck(anchor: string | null) {
  let prev: string | null = anchor
  let rows = 0
  let unchained = 0
  let chained = false
  let after = Number.MIN_SAFE_INTEGER
  return {
    after: () => after,
    report: (): ChainReport => ({ ok: true, rows, unchained, head: prev }),
    rows(batch: AuditEventRow[]): ChainReport | undefined {
      for (const row of batch) {
        after = row.id
        if (row.hash === null) {
          // Rows from before the chain may only lead it; one inside it is a row inserted behind its back.
          if (chained || anchor !== null) return { ok: false, rows, unchained, head: prev, first_bad: { id: row.id, problem: 'unchained', detail: 'a row without a hash inside the chain' } }
          unchained++
          continue
        }
        if (!chained && anchor === null && unchained > 0) prev = null
        chained = true
        rows++
        if (row.prevHash !== prev) return { ok: false, rows, unchained, head: prev, first_bad: { id: row.id, problem: 'unlinked', detail: 'prev_hash is not the hash of the row before it: a row before it was deleted or changed' } }
        const expected = auditHash(row.prevHash, row)
        if (expected !== row.hash) return { ok: false, rows, unchained, head: prev, first_bad: { id: row.id, problem: 'edited', detail: 'its content does not match its hash' } }
        prev = row.hash
      }
      return undefined
    },
  }
}
