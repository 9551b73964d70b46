import { readFileSync } from 'node:fs'
import { argon2Hasher, createBroker } from '../broker.js'
import { systemClock } from '../clock.js'
import { ConfigError } from '../config.js'
import { DEV, mintDevSessionToken, mintDevSvid } from '../dev/dev-setup.js'
import { OAuthError } from '../errors.js'
import { rotateKeys, RotationTooEarly } from '../keys/keyset.js'
import { revokeKey } from '../keys/revoke.js'
import { silentLogger } from '../logger.js'
import { loadRuntime } from '../runtime.js'
import { viewAuditEvent } from '../store/audit-view.js'
import { approveTask, denyTask } from '../tasks/approvals.js'
import { taskEvidence } from '../tasks/evidence.js'
import { endTask, revokeTasksOfWorkload, viewTask } from '../tasks/lifecycle.js'
import { signingKeyStatus } from '../keys/status.js'
import { listTasks, parseTaskListQuery, TASK_QUERY_RULES, WORKLOAD_REVOCATION, WORKLOAD_REVOCATION_RULES } from '../routes/admin.js'
import { revokeSession } from '../tasks/sessions.js'
import { clearAdminPoliciesOffline, POLICY_USAGE, policyCommand } from './policy.js'
import { CATALOG_USAGE, catalogCommand, isCatalogKind } from './catalog.js'
import { CATALOG_KINDS } from '../catalog/kinds.js'

const USAGE = `taskpass CLI — the admin API, from the shell (same config as the broker: --config or TASKPASS_CONFIG; dev mode otherwise)
Output is JSON with the HTTP API's field names (--json is accepted: it is always JSON); a failure is
one JSON line on stderr, {"error": <code>, "error_description": <text>}, with exit status 1
(2: bad configuration; 64: bad usage).

  -h, --help, help           print this text
  --version                  print the version

  dev-tokens                 print a dev user session token and a dev workload JWT-SVID, with a curl exchange
  hash-secret <secret>       print the argon2id hash of a secret (for resources[].credential / admin.apiKeyHashes)
  keys rotate [--force]      promote the next key, retire the current one, pre-publish a new standby key
                             (refused until the next key has been published for the JWKS max-age; --force
                             rotates anyway and warns how long verifiers may refuse new tokens)
  keys revoke <kid>          a compromised key: unpublish it now, revoke every token it signed, tell the feed
                             (revoking the current key promotes the next one)
  keys list                  print the published JWKS
  keys status                every signing key: kid, alg, state, times, published or not (as GET /admin/keys)
  tasks list [status] [--status <s>] [--workload <id>] [--user <sub>] [--resource <uri>] [--limit <n>]
                             list tasks, newest first, filtered as GET /admin/tasks is (status: active,
                             pending_approval, completed, revoked, denied, expired; limit 1 to 500, default 100)
  tasks show <id>            print a task
  tasks approve <id> [reason…]
                             approve a pending_approval task
  tasks deny <id> <reason…>  deny a pending_approval task (final: it ends denied)
  tasks revoke <id>          revoke a task and every token of it
  tasks revoke --workload <id>
                             revoke every open task of a workload and their tokens (as POST /admin/tasks/revoke)
  sessions revoke <issuer> <sid>
                             revoke a user session: its subject tokens are refused, its tasks revoked
  audit [after] [limit]      print audit events as JSON lines
  audit verify               check the audit hash chain; names the first bad row (exit 1), prints the head hash
  tasks evidence <id>        a task's whole story as JSON Lines, signed by the broker's key (last line)
${POLICY_USAGE}${CATALOG_USAGE}`

/** The options that take a value (`--name value` or `--name=value`): the task filters of `tasks list` and `tasks revoke`. */
const VALUE_OPTIONS = ['status', 'workload', 'user', 'resource', 'limit'] as const
type ValueOption = (typeof VALUE_OPTIONS)[number]

/** The value options of `argv` and the words left; a problem when one is given twice or has no value. */
function valueOptions(argv: string[]): { options: Partial<Record<ValueOption, string>>; rest: string[] } | string {
  const options: Partial<Record<ValueOption, string>> = {}
  const rest: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const m = /^--([a-z]+)(?:=(.*))?$/s.exec(arg)
    const name = VALUE_OPTIONS.find((o) => o === m?.[1])
    if (!m || !name) {
      rest.push(arg)
      continue
    }
    const value = m[2] ?? argv[++i]
    if (value === undefined) return `--${name} needs a value`
    if (options[name] !== undefined) return `--${name} given twice`
    options[name] = value
  }
  return { options, rest }
}

async function main(argv: string[]): Promise<number> {
  const force = argv.includes('--force')
  const parsedOptions = valueOptions(argv)
  if (typeof parsedOptions === 'string') return usage(64, parsedOptions)
  const { options, rest } = parsedOptions
  const positional = rest.filter((a, i) => a !== '--config' && rest[i - 1] !== '--config' && a !== '--force' && a !== '--json')
  const [cmd, sub, arg, arg2] = positional
  const command = `${cmd ?? ''} ${sub ?? ''}`.trim()
  // Only `tasks list` and `tasks revoke` take value options (revoke: --workload alone).
  const given = Object.keys(options)
  if (given.length > 0 && command !== 'tasks list' && !(command === 'tasks revoke' && given.every((o) => o === 'workload'))) {
    return usage(64, `${given.map((o) => `--${o}`).join(', ')}: not an option of "${command.slice(0, 64)}"`)
  }
  // The words after `tasks approve|deny <id>`, as one reason (so it needs no quoting).
  const reason = positional.length > 3 ? positional.slice(3).join(' ') : undefined
  if (cmd === 'hash-secret') {
    if (!sub) return usage()
    process.stdout.write((await argon2Hasher.hash(sub)) + '\n')
    return 0
  }
  if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE)
    return 0
  }
  if (cmd === '--version') {
    process.stdout.write(`${(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version}\n`)
    return 0
  }
  if (!cmd) return usage()
  if (!COMMANDS.has(cmd)) return usage(64, `unknown command "${cmd.slice(0, 64)}"`)

  const runtime = await loadRuntime(argv, process.env, silentLogger)
  if (cmd === 'dev-tokens') {
    if (!runtime.dev) {
      process.stderr.write('dev-tokens works only in dev mode (no --config / TASKPASS_CONFIG)\n')
      return 1
    }
    const issuer = runtime.config.issuer
    const session = await mintDevSessionToken(runtime.dev, systemClock, { audience: issuer })
    const svid = await mintDevSvid(runtime.dev, systemClock, { audience: issuer })
    process.stdout.write(
      [
        `# dev user "alice" session token (1 h) and the demo workload's JWT-SVID (5 min)`,
        `export SUBJECT_TOKEN='${session}'`,
        `export ACTOR_TOKEN='${svid}'`,
        `# demo resource credential (for /introspect): ${DEV.resourceClientId}:${runtime.dev.resourceSecret}`,
        `# admin API key: ${runtime.dev.adminKey}`,
        `# dev sign-in page (${issuer}/account, and any MCP client's browser flow): ${DEV.users.join(' or ')}, password ${runtime.dev.userPassword}`,
        `#`,
        `# exchange (sourcing this file only sets the variables; copy the lines below to run it):`,
        `# curl -s ${issuer}/token \\`,
        `#   -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \\`,
        `#   -d subject_token="$SUBJECT_TOKEN" -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \\`,
        `#   -d actor_token="$ACTOR_TOKEN" -d actor_token_type=urn:ietf:params:oauth:token-type:jwt \\`,
        `#   --data-urlencode resource=${DEV.resource} -d scope=notes:read`,
        ``,
      ].join('\n'),
    )
    return 0
  }

  if (cmd === 'policy' && sub === 'clear') {
    // The stored admin policies may be what keeps the broker (and so this CLI) from starting.
    try {
      const deps = await createBroker({ config: runtime.config, clock: systemClock, logger: silentLogger, kek: runtime.kek })
      await deps.database.close()
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e
      await clearAdminPoliciesOffline(runtime.config, systemClock.now())
      return 0
    }
  }
  const deps = await createBroker({ config: runtime.config, clock: systemClock, logger: silentLogger, kek: runtime.kek })
  if (cmd === 'policy') {
    try {
      const code = await policyCommand(deps, sub, arg, arg2)
      return code === 64 ? usage() : code
    } finally {
      await deps.database.close()
    }
  }
  if (isCatalogKind(cmd)) {
    try {
      const code = await catalogCommand(deps, cmd, positional.slice(1))
      return code === 64 ? usage() : code
    } finally {
      await deps.database.close()
    }
  }
  const print = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + '\n')
  try {
    switch (command) {
      case 'keys rotate': {
        const result = await rotateKeys(deps.keyStore, { force })
        print(result)
        if (result.warning) process.stderr.write(`warning: ${result.warning}\n`)
        const warned = result.warning ? `; ${result.warning}` : ''
        await deps.stores.audit.insert({ at: systemClock.now(), action: 'keys.rotate', decision: 'allow', reason: `rotated from the CLI${force ? ' (forced)' : ''}: ${result.retired} → ${result.current}${warned}` })
        return 0
      }
      case 'keys revoke': {
        if (!arg) return usage()
        const result = await revokeKey({ keyStore: deps.keyStore, stores: deps.stores, audiences: deps.config.resources.map((r) => r.uri) }, arg, 'admin:cli')
        print(result)
        if (result.warning) process.stderr.write(`warning: ${result.warning}\n`)
        return 0
      }
      case 'keys list':
        print(await deps.keys.jwks())
        return 0
      case 'keys status':
        print(await signingKeyStatus(deps.stores, systemClock.now()))
        return 0
      case 'tasks list': {
        // The API's query (`GET /admin/tasks`), checked by its rules; `tasks list <status>` is `--status`.
        if (arg !== undefined && options.status !== undefined) return usage(64, 'give the status once: as a word or as --status')
        if (arg2 !== undefined) return usage()
        const q = parseTaskListQuery({ ...options, ...(arg !== undefined ? { status: arg } : {}) })
        if (!q) return usage(64, TASK_QUERY_RULES)
        const now = systemClock.now()
        print({ tasks: (await listTasks(deps, q, now)).map((t) => viewTask(t, now)) })
        return 0
      }
      case 'tasks show':
        if (!arg) return usage()
        print(viewTask(await deps.stores.tasks.get(arg) ?? fail(new OAuthError('not_found', 404, 'task not found')), systemClock.now()))
        return 0
      case 'tasks approve':
        if (!arg) return usage()
        print(await approveTask(deps, arg, { kind: 'admin', id: 'cli' }, reason))
        return 0
      case 'tasks deny':
        if (!arg || reason === undefined) return usage()
        print(await denyTask(deps, arg, { kind: 'admin', id: 'cli' }, reason))
        return 0
      case 'tasks revoke': {
        if (options.workload === undefined) {
          if (!arg || arg2 !== undefined) return usage()
          print(await endTask(deps, arg, 'revoked', { kind: 'admin', id: 'cli' }))
          return 0
        }
        // A workload's open tasks (`POST /admin/tasks/revoke`): the workload, not a task id.
        if (arg !== undefined) return usage(64, 'tasks revoke takes a task id or --workload <id>, not both')
        const parsed = WORKLOAD_REVOCATION.safeParse({ workload: options.workload })
        if (!parsed.success) return usage(64, WORKLOAD_REVOCATION_RULES)
        const { workload } = parsed.data
        print({ workload, tasks_revoked: await revokeTasksOfWorkload(deps, workload, { kind: 'admin', id: 'cli' }) })
        return 0
      }
      case 'tasks evidence':
        if (!arg) return usage()
        process.stdout.write(await taskEvidence(deps, arg))
        return 0
      case 'sessions revoke':
        if (!arg || !arg2) return usage()
        print(await revokeSession(deps, arg, arg2, 'admin:cli'))
        return 0
      default:
        if (cmd === 'audit' && sub === 'verify') {
          const report = await deps.stores.audit.verify()
          print(report)
          return report.ok ? 0 : 1
        }
        if (cmd === 'audit') {
          // The admin API's bounds: after ≥ 0, 1 ≤ limit ≤ 1000.
          const after = sub ?? '0'
          const limit = arg ?? '100'
          if (!/^[0-9]{1,15}$/.test(after) || !/^[0-9]{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > 1000) return usage(64, '"after" ≥ 0 and 1 ≤ "limit" ≤ 1000 must be integers')
          for (const e of await deps.stores.audit.list({ afterId: Number(after), limit: Number(limit) })) process.stdout.write(JSON.stringify(viewAuditEvent(e)) + '\n')
          return 0
        }
        return usage()
    }
  } finally {
    await deps.database.close()
  }
}

function fail(e: Error): never {
  throw e
}

/** The top-level commands (anything else is "unknown command", exit 64). */
const COMMANDS = new Set(['dev-tokens', 'hash-secret', 'keys', 'tasks', 'sessions', 'audit', 'policy', ...CATALOG_KINDS])

function usage(code = 64, problem?: string): number {
  if (problem !== undefined) process.stderr.write(`taskpass: ${problem}\n\n`)
  process.stderr.write(USAGE)
  return code
}

/** A failure as the HTTP API would answer it: `{error, error_description}`. */
function errorLine(e: unknown): { line: { error: string; error_description: string }; status: number } {
  if (e instanceof ConfigError) return { line: { error: 'invalid_config', error_description: e.message }, status: 2 }
  if (e instanceof OAuthError) return { line: { ...e.toJSON() }, status: 1 }
  if (e instanceof RotationTooEarly) return { line: { error: 'rotation_too_early', error_description: e.message }, status: 1 }
  return { line: { error: 'server_error', error_description: e instanceof Error ? e.message : String(e) }, status: 1 }
}

try {
  process.exitCode = await main(process.argv.slice(2))
} catch (e) {
  const { line, status } = errorLine(e)
  process.stderr.write(JSON.stringify(line) + '\n')
  process.exitCode = status
}
