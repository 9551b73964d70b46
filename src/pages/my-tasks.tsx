/** "My tasks": the signed-in user's tasks, each open one with an "End task" button. */
import { ActionForm, ActionsHeader, Layout, SignedInHeader } from './layout.js'
import { safeUrl, untilText } from './format.js'
import type { MyTasksPageProps, TaskRowProps } from './props.js'

function Access({ resources }: { resources: TaskRowProps['resources'] }) {
  return (
    <ul class="access">
      {resources.map((r) => (
        <li>
          <span class="resource">{r.resource}</span>
          <span class="muted">scopes: </span>
          {r.scopes.length ? r.scopes.join(' ') : 'none'}
          <br />
          <span class="muted">tools: </span>
          {r.tools === undefined ? 'any the policy allows' : r.tools.length ? r.tools.join(' ') : 'none'}
        </li>
      ))}
    </ul>
  )
}

/** The task table, one "End task" form per endable task (`${endAction}/${taskId}/end`), and sign-out. */
export function MyTasksPage(props: MyTasksPageProps) {
  const { user, csrf, endAction, signOutAction, tasks, now, notice } = props
  return (
    <Layout title="My tasks" wide>
      <SignedInHeader title="My tasks" who={user} csrf={csrf} signOutAction={signOutAction} notice={notice} />
      {tasks.length === 0 ? (
        <p>You have no tasks.</p>
      ) : (
        <div class="table">
          <table>
            <thead>
              <tr>
                <th scope="col">Who</th>
                <th scope="col">Purpose</th>
                <th scope="col">Access</th>
                <th scope="col">Status</th>
                <th scope="col">Ends</th>
                <th scope="col">Tokens</th>
                <ActionsHeader />
              </tr>
            </thead>
            <tbody>
              {tasks.map((task) => (
                <tr>
                  <td>{task.who}</td>
                  <td>{task.purpose}</td>
                  <td>
                    <Access resources={task.resources} />
                  </td>
                  <td class="nowrap">
                    <span class={`status status-${task.status.replace(/[^a-z_-]/gi, '')}`}>{task.status}</span>
                  </td>
                  <td>{untilText(task.expiresAt, now)}</td>
                  <td class="nowrap">{`${task.tokensMinted} / ${task.maxTokens ?? 'no limit'}`}</td>
                  <td>
                    {task.endable && (
                      <ActionForm action={`${endAction}/${encodeURIComponent(task.taskId)}/end`} what="end" csrf={csrf} label="End task" formClass={null} />
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Layout>
  )
}
