import { argon2Hasher, createBroker } from '../broker.js'
import { systemClock } from '../clock.js'
import { ConfigError } from '../config.js'
import { DEV, mintDevSessionToken, mintDevSvid } from '../dev/dev-setup.js'
import { rotateKeys } from '../keys/keyset.js'
import { revokeKey } from '../keys/revoke.js'
import { createJsonLogger, silentLogger } from '../logger.js'
import { loadRuntime } from '../runtime.js'
import { approveTask, denyTask } from '../tasks/approvals.js'
import { endTask, viewTask } from '../tasks/lifecycle.js'
import { revokeSession } from '../tasks/sessions.js'
import { clearAdminPoliciesOffline, POLICY_USAGE, policyCommand } from './policy.js'

const USAGE = `taskpass CLI — the admin API, from the shell (same config as the broker: --config or TASKPASS_CONFIG; dev mode otherwise)

  dev-tokens                 print a dev user session token and a dev workload JWT-SVID, with a curl exchange
  hash-secret <secret>       print the argon2id hash of a secret (for resources[].credential / admin.apiKeyHashes)
  keys rotate [--force]      promote the next key, retire the current one, pre-publish a new standby key
                             (refused until the next key has been published for the JWKS max-age; --force
                             rotates anyway and warns how long verifiers may refuse new tokens)
  keys revoke <kid>          a compromised key: unpublish it now, revoke every token it signed, tell the feed
                             (revoking the current key promotes the next one)
  keys list                  print the published JWKS
  tasks list [status]        list tasks, newest first (active, pending_approval, completed, revoked, denied)
  tasks show <id>            print a task
  tasks approve <id> [reason…]
                             approve a pending_approval task
  tasks deny <id> <reason…>  deny a pending_approval task (final: it ends denied)
  tasks revoke <id>          revoke a task and every token of it
  sessions revoke <issuer> <sid>
                             revoke a user session: its subject tokens are refused, its tasks revoked
  audit [after] [limit]      print audit events as JSON lines
${POLICY_USAGE}`

async function main(argv: string[]): Promise<number> {
  const force = argv.includes('--force')
  const positional = argv.filter((a, i) => a !== '--config' && argv[i - 1] !== '--config' && a !== '--force')
  const [cmd, sub, arg, arg2] = positional
  // The words after `tasks approve|deny <id>`, as one reason (so it needs no quoting).
  const reason = positional.length > 3 ? positional.slice(3).join(' ') : undefined
  if (cmd === 'hash-secret') {
    if (!sub) return usage()
    process.stdout.write((await argon2Hasher.hash(sub)) + '\n')
    return 0
  }
  if (!cmd || cmd === 'help' || cmd === '--help') return usage(0)

  const runtime = await loadRuntime(argv, process.env, silentLogger)
  if (cmd === 'dev-tokens') {
    if (!runtime.dev) {
      process.stderr.write('dev-tokens works only in dev mode (no --config / TASKPASS_CONFIG)\n')
      return 1
    }
    const session = await mintDevSessionToken(runtime.dev, systemClock)
    const svid = await mintDevSvid(runtime.dev, systemClock)
    const issuer = runtime.config.issuer
    process.stdout.write(
      [
        `# dev user "alice" session token (1 h) and the demo workload's JWT-SVID (5 min)`,
        `export SUBJECT_TOKEN='${session}'`,
        `export ACTOR_TOKEN='${svid}'`,
        `# demo resource credential (for /introspect): ${DEV.resourceClientId}:${runtime.dev.resourceSecret}`,
        `# admin API key: ${runtime.dev.adminKey}`,
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
      deps.database.close()
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e
      clearAdminPoliciesOffline(runtime.config, systemClock.now())
      return 0
    }
  }
  const deps = await createBroker({ config: runtime.config, clock: systemClock, logger: silentLogger, kek: runtime.kek })
  if (cmd === 'policy') {
    try {
      const code = policyCommand(deps, sub, arg)
      return code === 64 ? usage() : code
    } finally {
      deps.database.close()
    }
  }
  const print = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + '\n')
  try {
    switch (`${cmd} ${sub ?? ''}`.trim()) {
      case 'keys rotate': {
        const result = await rotateKeys(deps.keyStore, { force })
        print(result)
        if (result.warning) process.stderr.write(`warning: ${result.warning}\n`)
        const warned = result.warning ? `; ${result.warning}` : ''
        deps.stores.audit.insert({ at: systemClock.now(), action: 'keys.rotate', decision: 'allow', reason: `rotated from the CLI${force ? ' (forced)' : ''}: ${result.retired} → ${result.current}${warned}` })
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
        print(deps.keys.jwks())
        return 0
      case 'tasks list': {
        const known = ['active', 'pending_approval', 'completed', 'revoked', 'denied'] as const
        const status = known.find((s) => s === arg)
        if (arg !== undefined && !status) return usage()
        const statuses = status ? [status] : undefined
        const now = systemClock.now()
        print(deps.stores.tasks.list({ statuses, limit: 100 }).map((t) => viewTask(t, now)))
        return 0
      }
      case 'tasks show':
        if (!arg) return usage()
        print(viewTask(deps.stores.tasks.get(arg) ?? fail(`no task ${arg}`), systemClock.now()))
        return 0
      case 'tasks approve':
        if (!arg) return usage()
        print(approveTask(deps, arg, { kind: 'admin', id: 'cli' }, reason))
        return 0
      case 'tasks deny':
        if (!arg || reason === undefined) return usage()
        print(denyTask(deps, arg, { kind: 'admin', id: 'cli' }, reason))
        return 0
      case 'tasks revoke':
        if (!arg) return usage()
        print(endTask(deps, arg, 'revoked', { kind: 'admin', id: 'cli' }))
        return 0
      case 'sessions revoke':
        if (!arg || !arg2) return usage()
        print(revokeSession(deps, arg, arg2, 'admin:cli'))
        return 0
      default:
        if (cmd === 'audit') {
          for (const e of deps.stores.audit.list({ afterId: Number(sub ?? 0), limit: Number(arg ?? 100) })) process.stdout.write(JSON.stringify(e) + '\n')
          return 0
        }
        return usage()
    }
  } finally {
    deps.database.close()
  }
}

function fail(msg: string): never {
  throw new Error(msg)
}

function usage(code = 64): number {
  process.stderr.write(USAGE)
  return code
}

try {
  process.exitCode = await main(process.argv.slice(2))
} catch (e) {
  const logger = createJsonLogger()
  if (e instanceof ConfigError) process.stderr.write(`taskpass: ${e.message}\n`)
  else logger.error((e as Error).message)
  process.exitCode = 1
}
