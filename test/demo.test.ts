/**
 * `npm run demo` is the README's worked example: it must run, and tell the story it promises —
 * the helper sees only its tool, is refused the other before it runs, and is refused again once
 * the parent task completes.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

describe('npm run demo', () => {
  it('runs the two-agent story end to end on loopback', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'demo/run.ts'], { cwd: new URL('..', import.meta.url), timeout: 60_000 })
    const lines = stdout.split('\n')
    const has = (re: RegExp) => assert.ok(lines.some((l) => re.test(l)), `a line matching ${re}\n${stdout}`)
    has(/^\[agent\] +tools\/list → read_note, write_note$/)
    has(/^\[agent\] +POST \/tasks\/.*\/subtasks → 201: .* for "demo-helper" is active \(depth 1\)/)
    has(/^\[helper\] +token claims: act=\{"sub":"demo-helper","act":\{"sub":"demo-agent"\}\} parent_task_id=/)
    has(/^\[helper\] +tools\/list → read_note \(filtered/)
    has(/^\[helper\] +tools\/call read_note .* → milk, eggs/)
    has(/^\[helper\] +tools\/call write_note → refused before it ran: McpError -32001: .*tool "write_note" is not permitted/)
    has(/^\[agent\] +POST \/tasks\/.*\/complete → 200: task completed, .* sub-task\(s\) ended with it: 1/)
    has(/^\[helper\] +tools\/call read_note → refused, \d+ ms after the parent task's completion: HTTP 401/)
    has(/^\[helper\] +POST \/token again for the sub-task → 400: \{"error":"invalid_grant"/)
  })
})
