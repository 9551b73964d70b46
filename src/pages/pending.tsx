/**
 * Waiting for an administrator: the task needs approval before the code is issued. The page
 * polls with a meta refresh (no script); the route answers the refresh with the redirect once decided.
 */
import { Layout } from './layout.js'
import { relativeTime, safeUrl, utcTime } from './format.js'
import type { PendingPageProps } from './props.js'

/** How often the page asks again, in seconds. */
export const PENDING_REFRESH_SECONDS = 3

/** "Waiting for an administrator's approval", refreshed every few seconds. */
export function PendingPage(props: PendingPageProps) {
  const { clientName, purpose, refreshUrl, expiresAt, now } = props
  return (
    <Layout title="Waiting for approval" refresh={{ seconds: PENDING_REFRESH_SECONDS, url: refreshUrl }}>
      <h1>Waiting for approval</h1>
      <p>
        <strong>{clientName}</strong> asked to open a task: <q>{purpose}</q>
      </p>
      <p class="notice" role="status">
        The task is waiting for an administrator's approval. This page checks again every few seconds and moves on
        by itself once it is decided.
      </p>
      <p class="muted">
        {expiresAt > now
          ? `The request lapses at ${utcTime(expiresAt, now)} (${relativeTime(expiresAt, now)}).`
          : 'The request has lapsed.'}
      </p>
      <p>
        <a href={safeUrl(refreshUrl, 'refresh URL')}>Check now</a>
      </p>
    </Layout>
  )
}
