/**
 * The admin console: sign-in with an admin API key, then the tasks (approve, deny, revoke), the
 * signing keys and the audit chain. Like every page, a function of its props, with no script.
 */
import { Layout, SignedInHeader } from './layout.js'
import { safeUrl, untilText } from './format.js'
import type { TaskResource } from '../tasks/lifecycle.js'

export interface ConsoleSignInProps {
  action: string
  /** Shown above the form after a failed attempt. */
  error?: string | undefined
}

export interface ConsoleTaskRow {
  taskId: string
  user: string
  /** The workload, and the OAuth client when the task was opened in the browser. */
  workload: string
  client?: string | undefined
  purpose: string
  resources: TaskResource[]
  status: string
  expiresAt: number
}

export interface ConsolePageProps {
  admin: { id: string; role: string }
  csrf: string
  /** Whether the admin may approve, deny and revoke (operator or above): an auditor sees no buttons. */
  mayAct: boolean
  /** The action forms post to `${taskAction}/${id}/{approve|deny|revoke}`. */
  taskAction: string
  signOutAction: string
  /** What the list is filtered by (`''`: any), and the choices: statuses, configured workloads and resources. */
  filter: { status: string; user: string; workload: string; resource: string }
  statuses: readonly string[]
  workloads: readonly string[]
  resources: readonly string[]
  tasks: ConsoleTaskRow[]
  keys: { kid: string; state: string }[]
  audit: { ok: boolean; rows: number; head: string | null; firstBad?: { id: number; problem: string; detail: string } | undefined }
  now: number
  notice?: string | undefined
}

/** The sign-in form: one password field for the admin API key. */
export function ConsoleSignInPage({ action, error }: ConsoleSignInProps) {
  return (
    <Layout title="Admin console">
      <h1>Admin console</h1>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <form method="post" action={safeUrl(action, 'form action')} class="stack">
        <label for="key">Admin API key</label>
        <input id="key" name="key" type="password" autocomplete="current-password" required autofocus />
        <div class="actions">
          <button type="submit" class="primary">
            Sign in
          </button>
        </div>
      </form>
    </Layout>
  )
}

function Access({ resources }: { resources: TaskResource[] }) {
  return (
    <ul class="access">
      {resources.map((r) => (
        <li>
          <span class="resource">{r.resource}</span>
          <span class="muted">scopes: </span>
          {r.scopes.length ? r.scopes.join(' ') : 'none'}
        </li>
      ))}
    </ul>
  )
}

function Actions({ task, csrf, taskAction }: { task: ConsoleTaskRow; csrf: string; taskAction: string }) {
  const action = (what: string) => safeUrl(`${taskAction}/${encodeURIComponent(task.taskId)}/${what}`, `${what} action`)
  return (
    <>
      {task.status === 'pending_approval' && (
        <>
          <form method="post" action={action('approve')} class="stack">
            <input type="hidden" name="csrf" value={csrf} />
            <button type="submit" class="primary">
              Approve
            </button>
          </form>
          <form method="post" action={action('deny')} class="stack">
            <input type="hidden" name="csrf" value={csrf} />
            <label for={`reason-${task.taskId}`}>Reason</label>
            <input id={`reason-${task.taskId}`} name="reason" type="text" maxlength={500} required />
            <button type="submit" class="danger">
              Deny
            </button>
          </form>
        </>
      )}
      {(task.status === 'active' || task.status === 'pending_approval') && (
        <form method="post" action={action('revoke')} class="stack">
          <input type="hidden" name="csrf" value={csrf} />
          <button type="submit" class="danger">
            Revoke
          </button>
        </form>
      )}
    </>
  )
}

/** A filter's select: "all", the choices, and the current value even when it is not among them (a removed workload). */
function Choice({ id, label, value, choices }: { id: string; label: string; value: string; choices: readonly string[] }) {
  const all = value === '' || choices.includes(value) ? choices : [...choices, value]
  return (
    <>
      <label for={id}>{label}</label>{' '}
      <select id={id} name={id}>
        <option value="" selected={value === ''}>
          all
        </option>
        {all.map((v) => (
          <option value={v} selected={value === v}>
            {v}
          </option>
        ))}
      </select>
    </>
  )
}

/** The console: tasks newest first (filtered by status), signing keys, audit chain. */
export function ConsolePage(props: ConsolePageProps) {
  const { admin, csrf, mayAct, taskAction, signOutAction, filter, statuses, workloads, resources, tasks, keys, audit, now, notice } = props
  return (
    <Layout title="Admin console" wide>
      <SignedInHeader title="Admin console" who={`admin:${admin.id}`} detail={admin.role} csrf={csrf} signOutAction={signOutAction} notice={notice} />
      <h2>Tasks</h2>
      <form method="get" action={safeUrl('/admin/console', 'filter action')} class="inline">
        <Choice id="status" label="Status" value={filter.status} choices={statuses} />{' '}
        <label for="user">User</label> <input id="user" name="user" type="text" maxlength={1024} value={filter.user} />{' '}
        <Choice id="workload" label="Workload" value={filter.workload} choices={workloads} />{' '}
        <Choice id="resource" label="Resource" value={filter.resource} choices={resources} />{' '}
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      {tasks.length === 0 ? (
        <p>No tasks.</p>
      ) : (
        <div class="table">
          <table>
            <thead>
              <tr>
                <th scope="col">Task</th>
                <th scope="col">User</th>
                <th scope="col">Workload / client</th>
                <th scope="col">Purpose</th>
                <th scope="col">Access</th>
                <th scope="col">Status</th>
                <th scope="col">Ends</th>
                {mayAct && (
                  <th scope="col">
                    <span class="visually-hidden">Actions</span>
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {tasks.map((task) => (
                <tr id={`task-${task.taskId}`}>
                  <td class="url">{task.taskId}</td>
                  <td>{task.user}</td>
                  <td>
                    {task.workload}
                    {task.client && (
                      <>
                        <br />
                        <span class="muted">{task.client}</span>
                      </>
                    )}
                  </td>
                  <td>{task.purpose}</td>
                  <td>
                    <Access resources={task.resources} />
                  </td>
                  <td class="nowrap">
                    <span class={`status status-${task.status.replace(/[^a-z_-]/gi, '')}`}>{task.status}</span>
                  </td>
                  <td>{untilText(task.expiresAt, now)}</td>
                  {mayAct && (
                    <td>
                      <Actions task={task} csrf={csrf} taskAction={taskAction} />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h2>Signing keys</h2>
      <ul class="access">
        {keys.map((k) => (
          <li>
            <span class="resource">{k.kid}</span> <span class="muted">{k.state}</span>
          </li>
        ))}
      </ul>
      <h2>Audit chain</h2>
      {audit.ok ? (
        <p class="notice" id="audit-status">
          {`Intact: ${audit.rows} rows verified; head ${audit.head ?? 'none'}.`}
        </p>
      ) : (
        <p class="error" id="audit-status" role="alert">
          {`Broken at row ${audit.firstBad?.id ?? '?'} (${audit.firstBad?.problem ?? 'unknown'}): ${audit.firstBad?.detail ?? ''}`}
        </p>
      )}
    </Layout>
  )
}
