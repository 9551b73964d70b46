/** A browser-facing error (an invalid authorization request that cannot be sent back to the client, …). */
import { Layout } from './layout.js'
import type { ErrorPageProps } from './props.js'

/** The error's title and message; the HTTP status is `pageResponse`'s `status`. */
export function ErrorPage({ status, title, message, code }: ErrorPageProps) {
  return (
    <Layout title={title}>
      <h1>{title}</h1>
      <p class="error" role="alert">
        {message}
      </p>
      <p class="muted" id="error-status">{code ? `HTTP ${status} · ${code}` : `HTTP ${status}`}</p>
    </Layout>
  )
}
