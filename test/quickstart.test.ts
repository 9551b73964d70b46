/**
 * The README's quick start, run as a newcomer would paste it: the dev-mode broker (`npm start`)
 * and, in a second shell, the block of curl commands. The one change made to the block is the
 * port — tests never take the fixed 8787 — which dev mode also advertises as its issuer.
 */
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

const root = new URL('..', import.meta.url)

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

async function hasCurl(): Promise<boolean> {
  try {
    await promisify(execFile)('curl', ['--version'])
    return true
  } catch {
    return false
  }
}

describe('README quick start', () => {
  it('the second-terminal block runs against npm start: a task, a token, the completion, a refused exchange', async (t) => {
    if (!(await hasCurl())) return t.skip('curl is not installed')
    const readme = readFileSync(new URL('README.md', root), 'utf8')
    const block = /In a second terminal:\n\n```sh\n([\s\S]*?)```/.exec(readme)?.[1]
    assert.ok(block, 'the block is in the README')
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), 'taskpass-quickstart-'))
    const env = { ...process.env, TASKPASS_DATA_DIR: dir, TASKPASS_PORT: String(port), TASKPASS_CONFIG: '' }
    const broker = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    try {
      // Ready when /healthz answers (bounded).
      const deadline = Date.now() + 30_000
      for (;;) {
        const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)
        if (ok) break
        if (Date.now() > deadline) throw new Error('the broker did not start')
        await new Promise((r) => setTimeout(r, 100))
      }
      const script = `set -eu\ncd ${JSON.stringify(root.pathname)}\n` + block.replaceAll('127.0.0.1:8787', `127.0.0.1:${port}`).replaceAll('/tmp/dev.sh', join(dir, 'dev.sh'))
      const { stdout } = await promisify(execFile)('bash', ['-c', script], { env, timeout: 60_000 })
      assert.match(stdout, /"task_id":"[0-9a-f-]{36}","status":"active"/)
      // expires_in: 300, or seconds less when the clock ticked between `dev-tokens` minting the
      // 5-minute SVID and this exchange (a token never outlives the attestation it came from).
      assert.match(stdout, /"access_token":"eyJ[^"]+","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":(?:300|2[0-9]{2}),"scope":"notes:read"/)
      assert.match(stdout, /"status":"completed".*"tokens_revoked":1/)
    } finally {
      broker.kill()
    }
  })
})
