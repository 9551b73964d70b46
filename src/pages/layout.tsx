/**
 * The frame of every server-rendered page (the browser part of the authorization-code flow):
 * a centered card, the one stylesheet, no script. Pages are functions of their props
 * (src/pages/props.ts) and never read a request; `pageResponse` (src/http/pages.ts) serves them
 * with their security headers.
 */
import type { Child } from 'hono/jsx'
import type { Hidden } from './props.js'
import { safeUrl } from './format.js'
import { PAGES_CSS_PATH, PAGES_CSS_VERSION } from './styles.js'

export interface LayoutProps {
  title: string
  /** A meta refresh (seconds, then this URL): how a page without script polls. */
  refresh?: { seconds: number; url: string } | undefined
  /** A wider card (the task table). */
  wide?: boolean | undefined
  /** A same-origin script the page loads (deferred); the page works without it. Served with `scripts` in its CSP. */
  script?: string | undefined
  children?: Child
}

/** The page frame: head, stylesheet, and the card the page's content sits in. */
export function Layout({ title, refresh, wide, script, children }: LayoutProps) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="color-scheme" content="light dark" />
        {refresh && <meta http-equiv="refresh" content={`${refresh.seconds};url=${safeUrl(refresh.url, 'refresh URL')}`} />}
        <title>{`${title} · taskpass`}</title>
        <link rel="stylesheet" href={`${PAGES_CSS_PATH}?v=${PAGES_CSS_VERSION}`} />
        {script && <script src={safeUrl(script, 'script')} defer />}
      </head>
      <body>
        <main class={wide ? 'card wide' : 'card'}>
          <p class="brand">taskpass</p>
          {children}
        </main>
      </body>
    </html>
  )
}

/**
 * The fields every form carries back: the CSRF token first, then the route's own hidden fields
 * (e.g. the sealed authorization request), values escaped by hono/jsx like any attribute.
 */
export function HiddenFields({ csrf, hidden = [] }: { csrf: string; hidden?: Hidden[] }) {
  return (
    <>
      <input type="hidden" name="csrf" value={csrf} />
      {hidden.map((h) => (
        <input type="hidden" name={h.name} value={h.value} />
      ))}
    </>
  )
}

/**
 * A form of one button acting on something (approve, deny, revoke, end): it posts the CSRF token
 * and `hidden`, with `children` (a reason field) before the button.
 */
export function ActionForm({ action, what, csrf, hidden, label, kind = 'danger', formClass = 'stack', children }: { action: string; what: string; csrf: string; hidden?: Hidden[]; label: string; kind?: 'danger' | 'primary' | 'secondary'; formClass?: string | null; children?: Child }) {
  return (
    <form method="post" action={safeUrl(action, `${what} action`)} class={formClass ?? undefined}>
      <HiddenFields csrf={csrf} hidden={hidden} />
      {children}
      <button type="submit" class={kind}>
        {label}
      </button>
    </form>
  )
}

/**
 * What a task may do (or a workload is granted): each resource with its scopes and, with
 * `tools`, its MCP tools — `any the policy allows` when the task declared none.
 */
export function Access({ resources, tools = false }: { resources: readonly { resource: string; scopes: readonly string[]; tools?: readonly string[] | undefined }[]; tools?: boolean }) {
  return (
    <ul class="access">
      {resources.map((r) => (
        <li>
          <span class="resource">{r.resource}</span>
          <span class="muted">scopes: </span>
          {r.scopes.length ? r.scopes.join(' ') : 'none'}
          {tools && (
            <>
              <br />
              <span class="muted">tools: </span>
              {r.tools === undefined ? 'any the policy allows' : r.tools.length ? r.tools.join(' ') : 'none'}
            </>
          )}
        </li>
      ))}
    </ul>
  )
}

/** A task's status as a badge (its class names it, for the stylesheet and the live list's script). */
export function StatusBadge({ status }: { status: string }) {
  return <span class={`status status-${status.replace(/[^a-z_-]/gi, '')}`}>{status}</span>
}

/** The header cell of a table's action column, named for screen readers only. */
export function ActionsHeader() {
  return (
    <th scope="col">
      <span class="visually-hidden">Actions</span>
    </th>
  )
}

/** A table of `rows` rows under `columns` (and an action column), or the `empty` sentence when there are none. */
export function DataTable({ id, rows, empty, columns, actions = false, children }: { id: string; rows: number; empty: string; columns: string[]; actions?: boolean; children: Child }) {
  if (rows === 0) return <p>{empty}</p>
  return (
    <div class="table">
      <table id={id}>
        <thead>
          <tr>
            {columns.map((c) => (
              <th scope="col">{c}</th>
            ))}
            {actions && <ActionsHeader />}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  )
}

/** A signed-in page's heading: the title, who is signed in (`who`, `detail` after it), the sign-out form, and a notice. */
export function SignedInHeader({ title, who, detail, csrf, signOutAction, notice }: { title: string; who: string; detail?: string | undefined; csrf: string; signOutAction: string; notice?: string | undefined }) {
  return (
    <>
      <div class="header">
        <h1>{title}</h1>
        <form method="post" action={safeUrl(signOutAction, 'sign-out action')} class="inline">
          <input type="hidden" name="csrf" value={csrf} />
          <span class="muted">
            Signed in as <strong>{who}</strong>
            {detail !== undefined ? ` (${detail})` : ''}
          </span>{' '}
          <button type="submit" class="secondary">
            Sign out
          </button>
        </form>
      </div>
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
    </>
  )
}
