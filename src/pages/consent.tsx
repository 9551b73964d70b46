/**
 * The consent page: the user opens a task for a client. It names the client by the hosts that
 * matter — where its metadata document lives and where the browser is sent back — because the
 * `client_name` is whatever the client chose to call itself (MCP security best practices: the
 * consent UI names the client, its scopes and its redirect URI).
 */
import { HiddenFields, Layout } from './layout.js'
import { humanDuration, safeUrl } from './format.js'
import type { ConsentPageProps } from './props.js'

/** Allow or deny opening a task; scopes and tools can be narrowed, the purpose edited, a lifetime chosen. */
export function ConsentPage(props: ConsentPageProps) {
  const { action, hidden, csrf, user, client, resource, scopes, tools, ttls, purpose } = props
  return (
    <Layout title={`Open a task for ${client.name}`}>
      <h1>
        Open a task for <span class="client-name">{client.name}</span>?
      </h1>
      <p class="muted">
        Signed in as <strong>{user}</strong>
      </p>
      <dl class="hosts">
        <dt>Client published by</dt>
        <dd>
          <strong class="host">{client.idHost}</strong>
          <span class="url">{client.id}</span>
        </dd>
        <dt>Sends you back to</dt>
        <dd>
          <strong class="host">{client.redirectHost}</strong>
          <span class="url">{client.redirectUri}</span>
        </dd>
      </dl>
      {client.localhostOnly && (
        <p class="warning" role="alert">
          This client only returns to <strong>localhost</strong>: it is a program on your own computer, and taskpass
          cannot check that it is the one named above. Allow only if you started it yourself.
        </p>
      )}
      <form method="post" action={safeUrl(action, 'form action')} class="stack">
        <HiddenFields csrf={csrf} hidden={hidden} />
        <fieldset>
          <legend>Resource</legend>
          <p class="resource">{resource}</p>
        </fieldset>
        <fieldset>
          <legend>Scopes</legend>
          {scopes.length === 0 ? (
            <p class="muted">No scopes asked for.</p>
          ) : (
            scopes.map((scope) => (
              <label class="check">
                <input type="checkbox" name="scope" value={scope} checked />
                <span>{scope}</span>
              </label>
            ))
          )}
        </fieldset>
        <fieldset>
          <legend>Tools</legend>
          {tools.length === 0 ? (
            <p>any tool the policy allows</p>
          ) : (
            tools.map((tool) => (
              <label class="check">
                <input type="checkbox" name="tool" value={tool} checked />
                <span>{tool}</span>
              </label>
            ))
          )}
        </fieldset>
        <label for="ttl">Task ends after</label>
        <select id="ttl" name="ttl">
          {ttls.map((ttl, i) => (
            <option value={String(ttl)} selected={i === 0}>
              {humanDuration(ttl)}
            </option>
          ))}
        </select>
        <label for="purpose">Purpose</label>
        <input id="purpose" name="purpose" type="text" maxlength={200} value={purpose} required />
        <div class="actions">
          <button type="submit" name="decision" value="allow" class="primary">
            Allow
          </button>
          {/* Deny must work even with the purpose cleared: no form validation for it. */}
          <button type="submit" name="decision" value="deny" class="secondary" formnovalidate>
            Deny
          </button>
        </div>
      </form>
    </Layout>
  )
}
