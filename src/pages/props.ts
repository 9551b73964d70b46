/**
 * What each server-rendered page shows (src/pages/*.tsx): plain data, so the routes decide and the
 * pages only render. Every form posts `csrf` back; every page is served by `pageResponse`.
 */

/** A hidden form field carried through a page unchanged (e.g. the sealed authorization request). */
export interface Hidden {
  name: string
  value: string
}

export interface LoginPageProps {
  /** Where the form posts (dev sign-in) */
  action: string
  hidden: Hidden[]
  csrf: string
  /** Dev mode's users: a user field and a password field. */
  dev?: { issuerName: string } | undefined
  /** Upstream IdPs: one button (a link or a form posting `issuer`) each. */
  idps: { name: string; href: string }[]
  /** Shown above the form after a failed attempt. */
  error?: string | undefined
  /** The client the user is signing in for, when there is one. */
  clientName?: string | undefined
}

export interface ConsentPageProps {
  action: string
  hidden: Hidden[]
  csrf: string
  /** Who is signed in. */
  user: string
  client: {
    name: string
    /** The metadata document URL, its host shown prominently. */
    id: string
    idHost: string
    redirectUri: string
    redirectHost: string
    /** Every redirect URI is on localhost: a warning (a local program, not the site named). */
    localhostOnly: boolean
  }
  resource: string
  /** Each scope asked for, as a checkbox `scope` (checked by default); the user may uncheck to narrow. */
  scopes: string[]
  /** Each tool asked for, as a checkbox `tool`; empty: "any tool the policy allows". */
  tools: string[]
  /** The task's lifetime: a select `ttl` of these seconds, the first selected. */
  ttls: number[]
  /** A text field `purpose`, prefilled. */
  purpose: string
}

export interface TaskRowProps {
  taskId: string
  /** The client's name or the workload id. */
  who: string
  purpose: string
  resources: { resource: string; scopes: string[]; tools?: string[] | undefined }[]
  status: string
  expiresAt: number
  tokensMinted: number
  maxTokens?: number | undefined
  /** Whether the user may end it (open tasks). */
  endable: boolean
}

export interface MyTasksPageProps {
  user: string
  csrf: string
  /** Form action per task: `${endAction}/${taskId}/end`. */
  endAction: string
  signOutAction: string
  tasks: TaskRowProps[]
  /** Epoch seconds, for "in 12 min". */
  now: number
  notice?: string | undefined
}

export interface PendingPageProps {
  clientName: string
  purpose: string
  /** Polled with a meta refresh (no script): answers with the redirect once decided. */
  refreshUrl: string
  expiresAt: number
  now: number
}

export interface ErrorPageProps {
  status: number
  title: string
  message: string
  /** The error code (`OAuthErrorCode`), shown after the status where the reader is an operator (the console). */
  code?: string | undefined
}
