/** The sign-in page: dev mode's user and password fields, one link per upstream IdP. */
import { HiddenFields, Layout } from './layout.js'
import { safeUrl } from './format.js'
import type { LoginPageProps } from './props.js'

/** Sign-in before consent; the dev form posts to `action`, each IdP is a link that starts its login. */
export function LoginPage(props: LoginPageProps) {
  const { action, hidden, csrf, dev, idps, error, clientName } = props
  return (
    <Layout title="Sign in">
      <h1>Sign in</h1>
      {clientName && (
        <p class="lead">
          to continue to <strong>{clientName}</strong>
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {idps.length > 0 && (
        <ul class="idps">
          {idps.map((idp) => (
            <li>
              <a class="button primary" href={safeUrl(idp.href, 'IdP link')}>
                Sign in with {idp.name}
              </a>
            </li>
          ))}
        </ul>
      )}
      {dev && (
        <form method="post" action={safeUrl(action, 'form action')} class="stack">
          <HiddenFields csrf={csrf} hidden={hidden} />
          <p class="warning">
            Development sign-in at <strong>{dev.issuerName}</strong>: not for production use.
          </p>
          <label for="username">User</label>
          <input id="username" name="username" type="text" autocomplete="username" required autofocus />
          <label for="password">Password</label>
          <input id="password" name="password" type="password" autocomplete="current-password" required />
          <div class="actions">
            <button type="submit" class="primary">
              Sign in
            </button>
          </div>
        </form>
      )}
      {!dev && idps.length === 0 && <p>No sign-in method is configured.</p>}
    </Layout>
  )
}
