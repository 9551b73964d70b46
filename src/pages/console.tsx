/**
 * The admin console: sign-in with an admin API key, then the tasks (approve, deny, revoke), a
 * task's page with its timeline, the signing keys (rotate), the audit chain, the workloads and
 * resources, and a live task list. Like every page, a function of its props; only the live list
 * loads a script (src/pages/console-live.ts), and it works without it.
 */
import type { Child } from 'hono/jsx'
import { Access, ActionForm, ActionsHeader, DataTable, Layout, SignedInHeader, StatusBadge } from './layout.js'
import { safeUrl, untilText } from './format.js'
import type { TimelineEntry } from '../tasks/evidence.js'
import type { TaskResource } from '../tasks/lifecycle.js'
import { CONSOLE_LIVE_JS_PATH, CONSOLE_LIVE_JS_VERSION } from './console-live.js'

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
  /** Where the rotate form posts, when the admin may rotate keys (the admin role); else no form. */
  rotateAction?: string | undefined
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

/** Where a task's own page is. */
export const taskPage = (taskAction: string, id: string) => `${taskAction}/${encodeURIComponent(id)}`

/** The console's pages, linked from each of them. */
export function ConsoleNav({ base, here }: { base: string; here: string }) {
  const pages = [['Tasks', base], ['Live', `${base}/live`], ['Workloads', `${base}/workloads`], ['Resources', `${base}/resources`]] as const
  return (
    <nav class="inline console-nav" aria-label="Console">
      {pages.map(([name, href]) => (href === here ? <strong aria-current="page">{name}</strong> : <a href={safeUrl(href, 'console link')}>{name}</a>))}
    </nav>
  )
}

function Actions({ task, csrf, taskAction, from }: { task: Pick<ConsoleTaskRow, 'taskId' | 'status'>; csrf: string; taskAction: string; from?: 'task' | undefined }) {
  const action = (what: string) => `${taskPage(taskAction, task.taskId)}/${what}`
  // The task's page asks to come back to it after the action; the list, to the list.
  const back = from ? [{ name: 'from', value: from }] : []
  return (
    <>
      {task.status === 'pending_approval' && (
        <>
          <ActionForm action={action('approve')} what="approve" csrf={csrf} hidden={back} label="Approve" kind="primary" />
          <ActionForm action={action('deny')} what="deny" csrf={csrf} hidden={back} label="Deny">
            <label for={`reason-${task.taskId}`}>Reason</label>
            <input id={`reason-${task.taskId}`} name="reason" type="text" maxlength={500} required />
          </ActionForm>
        </>
      )}
      {(task.status === 'active' || task.status === 'pending_approval') && <ActionForm action={action('revoke')} what="revoke" csrf={csrf} hidden={back} label="Revoke" />}
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
  const { admin, csrf, mayAct, taskAction, signOutAction, filter, statuses, workloads, resources, tasks, keys, rotateAction, audit, now, notice } = props
  return (
    <Layout title="Admin console" wide>
      <SignedInHeader title="Admin console" who={`admin:${admin.id}`} detail={admin.role} csrf={csrf} signOutAction={signOutAction} notice={notice} />
      <ConsoleNav base="/admin/console" here="/admin/console" />
      <h2>Tasks</h2>
      <form method="get" action={safeUrl('/admin/console', 'filter action')} class="inline filters">
        <Choice id="status" label="Status" value={filter.status} choices={statuses} />{' '}
        <label for="user">User</label> <input id="user" name="user" type="text" maxlength={1024} value={filter.user} />{' '}
        <Choice id="workload" label="Workload" value={filter.workload} choices={workloads} />{' '}
        <Choice id="resource" label="Resource" value={filter.resource} choices={resources} />{' '}
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      <DataTable id="tasks" rows={tasks.length} empty="No tasks." columns={['Task', 'User', 'Workload / client', 'Purpose', 'Access', 'Status', 'Ends']} actions={mayAct}>
        {tasks.map((task) => (
          <tr id={`task-${task.taskId}`}>
            <td class="url">
              <a href={safeUrl(taskPage(taskAction, task.taskId), 'task link')}>{task.taskId}</a>
            </td>
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
              <Access resources={task.resources} tools />
            </td>
            <td class="nowrap">
              <StatusBadge status={task.status} />
            </td>
            <td>{untilText(task.expiresAt, now)}</td>
            {mayAct && (
              <td>
                <Actions task={task} csrf={csrf} taskAction={taskAction} />
              </td>
            )}
          </tr>
        ))}
      </DataTable>
      <h2>Signing keys</h2>
      <ul class="access">
        {keys.map((k) => (
          <li>
            <span class="resource">{k.kid}</span> <span class="muted">{k.state}</span>
          </li>
        ))}
      </ul>
      {rotateAction && (
        <form method="post" action={safeUrl(rotateAction, 'rotate action')} class="inline">
          <input type="hidden" name="csrf" value={csrf} />
          <label class="check">
            <input id="force" name="force" type="checkbox" value="true" /> Force, even if verifiers may not have seen the next key yet
          </label>{' '}
          <button type="submit" class="secondary">
            Rotate signing keys
          </button>
        </form>
      )}
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

/** What every signed-in console page shows at its top. */
export interface ConsoleFrameProps {
  admin: { id: string; role: string }
  csrf: string
  signOutAction: string
  notice?: string | undefined
}

function ConsoleFrame({ title, here, frame, script, children }: { title: string; here: string; frame: ConsoleFrameProps; script?: string | undefined; children?: Child }) {
  return (
    <Layout title={`${title} · Admin console`} wide script={script}>
      <SignedInHeader title={title} who={`admin:${frame.admin.id}`} detail={frame.admin.role} csrf={frame.csrf} signOutAction={frame.signOutAction} notice={frame.notice} />
      <ConsoleNav base="/admin/console" here={here} />
      {children}
    </Layout>
  )
}

export interface ConsoleTaskPageProps extends ConsoleFrameProps {
  mayAct: boolean
  taskAction: string
  task: Pick<ConsoleTaskRow, 'taskId' | 'status' | 'resources'>
  /** The task's facts, in order: label and value. */
  facts: [string, string][]
  /** The session the task is bound to, when it is: the revoke-session form posts it to `sessionAction`. */
  session?: { issuer: string; sid: string } | undefined
  sessionAction: string
  /** Oldest first: newest last. */
  timeline: TimelineEntry[]
  /** Set when retention has pruned the oldest audit rows: the story may be incomplete. */
  retention?: string | undefined
}

const instant = (at: number) => `${new Date(at * 1000).toISOString().slice(0, 19).replace('T', ' ')} UTC`

/** A task's page: its facts, the actions the role allows, and its timeline, newest last. */
export function ConsoleTaskPage(props: ConsoleTaskPageProps) {
  const { mayAct, taskAction, task, facts, session, sessionAction, timeline, retention, csrf } = props
  return (
    <ConsoleFrame title="Task" here="" frame={props}>
      <h2 class="url">{task.taskId}</h2>
      <dl class="facts" id="facts">
        {facts.map(([label, value]) => (
          <>
            <dt>{label}</dt>
            <dd>{value}</dd>
          </>
        ))}
        <dt>Access</dt>
        <dd>
          <Access resources={task.resources} tools />
        </dd>
      </dl>
      {mayAct && (
        <div class="actions" id="task-actions">
          <Actions task={task} csrf={csrf} taskAction={taskAction} from="task" />
          {session && (
            <ActionForm
              action={sessionAction}
              what="session"
              csrf={csrf}
              hidden={[{ name: 'issuer', value: session.issuer }, { name: 'sid', value: session.sid }, { name: 'task', value: task.taskId }]}
              label="Revoke the user's session"
            />
          )}
        </div>
      )}
      <h2>Timeline</h2>
      {retention && (
        <p class="warning" role="note">
          {retention}
        </p>
      )}
      <DataTable id="timeline" rows={timeline.length} empty="Nothing recorded." columns={['When', 'What', 'Outcome', 'Detail']}>
        {timeline.map((e) => (
          <tr>
            <td class="nowrap">{instant(e.at)}</td>
            <td class="nowrap">{e.what}</td>
            <td>{e.outcome ?? ''}</td>
            <td>{e.detail}</td>
          </tr>
        ))}
      </DataTable>
    </ConsoleFrame>
  )
}

export interface ConsoleWorkloadRow {
  id: string
  enabled: boolean
  /** How it proves who it is: `attestation by <issuer>`, or `OAuth client <client id rule>`. */
  attests: string
  grants: { resource: string; scopes: string[] }[]
  requireDpop: boolean
  delegateTo: string[]
}

export interface ConsoleWorkloadsPageProps extends ConsoleFrameProps {
  workloads: ConsoleWorkloadRow[]
  /** Where the revoke-open-tasks form posts, when the admin may act (operator or above). */
  revokeAction?: string | undefined
}

const yesNo = (b: boolean) => (b ? 'yes' : 'no')

/** The configured workloads, as the broker reads them now. */
export function ConsoleWorkloadsPage(props: ConsoleWorkloadsPageProps) {
  const { workloads, revokeAction, csrf } = props
  return (
    <ConsoleFrame title="Workloads" here="/admin/console/workloads" frame={props}>
      <DataTable id="workloads" rows={workloads.length} empty="No workloads are configured." columns={['Workload', 'Enabled', 'Attests as', 'Grants', 'DPoP required', 'Delegates to']} actions={revokeAction !== undefined}>
        {workloads.map((w) => (
          <tr id={`workload-${w.id}`}>
            <td class="url">{w.id}</td>
            <td>{yesNo(w.enabled)}</td>
            <td class="url">{w.attests}</td>
            <td>
              <Access resources={w.grants} />
            </td>
            <td>{yesNo(w.requireDpop)}</td>
            <td>{w.delegateTo.length ? w.delegateTo.join(' ') : 'none'}</td>
            {revokeAction && (
              <td>
                <ActionForm action={revokeAction} what="revoke" csrf={csrf} hidden={[{ name: 'workload', value: w.id }]} label="Revoke its open tasks" />
              </td>
            )}
          </tr>
        ))}
      </DataTable>
    </ConsoleFrame>
  )
}

export interface ConsoleResourceRow {
  uri: string
  scopes: string[]
  requireApproval: boolean
  requireDpop: boolean
  maxTokensPerTask?: number | undefined
}

/** The registered resources, as the broker reads them now. */
export function ConsoleResourcesPage(props: ConsoleFrameProps & { resources: ConsoleResourceRow[] }) {
  return (
    <ConsoleFrame title="Resources" here="/admin/console/resources" frame={props}>
      <DataTable id="resources" rows={props.resources.length} empty="No resources are registered." columns={['Resource', 'Scopes', 'Approval required', 'DPoP required', 'Tokens per task']}>
        {props.resources.map((r) => (
          <tr>
            <td class="url">{r.uri}</td>
            <td>{r.scopes.join(' ')}</td>
            <td>{yesNo(r.requireApproval)}</td>
            <td>{yesNo(r.requireDpop)}</td>
            <td>{r.maxTokensPerTask === undefined ? 'no bound' : String(r.maxTokensPerTask)}</td>
          </tr>
        ))}
      </DataTable>
    </ConsoleFrame>
  )
}

/** A task as the live list shows it (and as its script receives it: the same fields). */
export interface LiveTaskRow {
  task_id: string
  href: string
  user: string
  workload: string
  purpose: string
  status: string
  ends: string
}

/**
 * The live task list: the newest tasks, as a reload shows them; with its script, each task that
 * opens or changes comes to the top as it happens (Server-Sent Events from `events`).
 */
export function ConsoleLivePage(props: ConsoleFrameProps & { tasks: LiveTaskRow[]; events: string }) {
  return (
    <ConsoleFrame title="Live tasks" here="/admin/console/live" frame={props} script={`${CONSOLE_LIVE_JS_PATH}?v=${CONSOLE_LIVE_JS_VERSION}`}>
      <p class="muted" id="live-state" aria-live="polite">
        The newest tasks as of this page's loading: reload to see later changes.
      </p>
      {props.tasks.length === 0 && <p id="live-empty">No tasks yet.</p>}
      <div class="table">
        <table id="live-tasks" data-events={safeUrl(props.events, 'events URL')}>
          <thead>
            <tr>
              <th scope="col">Task</th>
              <th scope="col">User</th>
              <th scope="col">Workload / client</th>
              <th scope="col">Purpose</th>
              <th scope="col">Status</th>
              <th scope="col">Ends</th>
            </tr>
          </thead>
          <tbody>
            {props.tasks.map((t) => (
              <tr id={`task-${t.task_id}`}>
                <td class="url">
                  <a href={safeUrl(t.href, 'task link')}>{t.task_id}</a>
                </td>
                <td>{t.user}</td>
                <td>{t.workload}</td>
                <td>{t.purpose}</td>
                <td class="nowrap">
                  <StatusBadge status={t.status} />
                </td>
                <td>{t.ends}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </ConsoleFrame>
  )
}
