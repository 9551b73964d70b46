import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { describe, it } from 'node:test'
import { openDatabase } from '../src/store/db.js'
import { sqliteOnly } from './harness.js'

describe('durability', { skip: sqliteOnly('kill -9 of a broker process on a SQLite file, then the file read back') }, () => {
  it('issued tokens and a completed task survive the process being killed right after the response', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'taskpass-crash-')), 'crash.db')
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/crash-writer.ts', file], { stdio: ['ignore', 'pipe', 'inherit'] })
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout! })
      rl.once('line', resolve)
      child.once('exit', (code) => reject(new Error(`child exited early with ${code}`)))
    })
    child.kill('SIGKILL')
    await new Promise((r) => child.once('exit', r))
    const ids = JSON.parse(line) as { completed: string; open: string }

    const db = openDatabase(file)
    try {
      const tasks = db.sqlite.prepare('select id, status from tasks order by id').all() as { id: string; status: string }[]
      assert.deepEqual(Object.fromEntries(tasks.map((t) => [t.id, t.status])), { [ids.completed]: 'completed', [ids.open]: 'active' })
      const tokens = db.sqlite.prepare('select task_id, status from tokens').all() as { task_id: string; status: string }[]
      assert.deepEqual(tokens.map((t) => `${t.task_id === ids.completed ? 'completed' : 'open'}:${t.status}`).sort(), ['completed:revoked', 'open:active'])
      const events = db.sqlite.prepare('select kind, task_id from revocation_events').all()
      assert.deepEqual(events, [{ kind: 'task_completed', task_id: ids.completed }])
    } finally {
      db.close()
    }
  })
})
