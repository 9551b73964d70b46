/**
 * Sample props for the server-rendered pages, plain and hostile, shared by the render tests
 * (pages.test.ts) and the browser tests (browser-pages.test.ts).
 */
import type { ConsentPageProps, MyTasksPageProps } from '../src/pages/props.js'

export const NOW = 1_800_000_000

/** Markup that must come out as text wherever a prop lands, in an element or in an attribute. */
export const HOSTILE = `"><img src=x onerror=alert(1)><script>alert(1)</script>'`

export function consentProps(overrides: Partial<ConsentPageProps> = {}): ConsentPageProps {
  return {
    action: '/authorize/consent',
    hidden: [{ name: 'request', value: 'sealed.request.value' }],
    csrf: 'csrf-consent-token',
    user: 'alice@example.com',
    client: {
      name: 'Notes Assistant',
      id: 'https://assistant.example.com/oauth/client.json',
      idHost: 'assistant.example.com',
      redirectUri: 'https://assistant.example.com/callback',
      redirectHost: 'assistant.example.com',
      localhostOnly: false,
    },
    resource: 'https://notes.example.com/mcp',
    scopes: ['notes:read', 'notes:write'],
    tools: ['search_notes', 'create_note'],
    ttls: [900, 3600, 28_800],
    purpose: 'Summarise this week’s meeting notes',
    ...overrides,
  }
}

export function myTasksProps(overrides: Partial<MyTasksPageProps> = {}): MyTasksPageProps {
  return {
    user: 'alice@example.com',
    csrf: 'csrf-tasks-token',
    endAction: '/my/tasks',
    signOutAction: '/my/sign-out',
    now: NOW,
    tasks: [
      {
        taskId: 'task_open1',
        who: 'Notes Assistant',
        purpose: 'Summarise notes',
        resources: [{ resource: 'https://notes.example.com/mcp', scopes: ['notes:read'], tools: ['search_notes'] }],
        status: 'active',
        expiresAt: NOW + 12 * 60,
        tokensMinted: 3,
        maxTokens: 10,
        endable: true,
      },
      {
        taskId: 'task_done2',
        who: 'wl_ci-agent',
        purpose: 'Nightly export',
        resources: [{ resource: 'https://calendar.example.com/mcp', scopes: ['calendar:read'] }],
        status: 'completed',
        expiresAt: NOW - 5 * 60,
        tokensMinted: 1,
        endable: false,
      },
    ],
    ...overrides,
  }
}
