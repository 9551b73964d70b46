/** "My tasks": the signed-in user's tasks, each open one with an "End task" button. */
import { Access, ActionForm, ActionsHeader, Layout, SignedInHeader, StatusBadge } from './layout.js'
import { safeUrl, untilText } from './format.js'
import type { MyTasksPageProps } from './props.js'

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
                    <Access resources={task.resources} tools />
                  </td>
                  <td class="nowrap">
                    <StatusBadge status={task.status} />
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
