/**
 * Attacks on the policy, approval and tool-call surfaces: each test is a way in that was found
 * open, and shows it closed. A refusal asserts its status, its `error`, its audit row (with the
 * policy version and the deciding policies) and that nothing else changed.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { fetchToolCallRefusal } from '../src/verifier/gates.js'

describe('attack: the verifier kit\'s tool-call check', () => {
  const auth = { token: 't', extra: { jti: 'j1', task_id: 'task-1', sub_id: { format: 'iss_sub', iss: 'https://idp.example', sub: 'alice' } } }
  const asked: string[] = []
  const pdp = {
    authorize: async (_a: unknown, { tool }: { tool: string }) => {
      asked.push(tool)
      return tool === 'read_note' ? { allowed: true } : { allowed: false, reason: 'tool_not_in_task' }
    },
  }

  it('a body starting with a UTF-8 byte order mark is still checked: the MCP transports strip it (TextDecoder) and would run the call', async () => {
    const call = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'delete_note', arguments: {} } })
    const body = new Uint8Array([0xef, 0xbb, 0xbf, ...Buffer.from(call)])
    const request = () => new Request('https://notes.example/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    // What the transports read: the SDKs' readRequestBody decode with `new TextDecoder()`, which drops the BOM.
    assert.equal((JSON.parse(new TextDecoder().decode(body)) as { params: { name: string } }).params.name, 'delete_note', 'the transport sees a tool call')
    asked.length = 0
    const refused = await fetchToolCallRefusal(pdp, auth, request())
    assert.ok(refused, 'the call is refused before the server sees it')
    assert.equal(refused.status, 200)
    assert.equal(((await refused.json()) as { error: { code: number } }).error.code, -32001)
    assert.deepEqual(asked, ['delete_note'])
  })
})
