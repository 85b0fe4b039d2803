/**
 * `pnpm test:faults`: Haven under steady load while its dependencies fail, on a PostgreSQL cluster
 * and a redis-server of its own (initdb in a temporary directory, spare loopback ports) — never the
 * machine's shared services. The API and the worker run as real processes.
 *
 * Injected, in order, while clients create referrals, share them and read them back:
 *   1. pg_terminate_backend of every API and worker database connection;
 *   2. a PostgreSQL restart;
 *   3. Redis stopped, then started again (empty: it keeps nothing on disk);
 *   4. kill -9 of the worker, then a new worker.
 * Checked afterwards:
 *   - every request answered 2xx left its record, with its audit event;
 *   - no referral or share exists without its audit event;
 *   - failures were 503 only: no 500, no hang (a 10 s client timeout counts as a hang);
 *   - the services recovered without a restart (readiness, and a last create, succeed);
 *   - every share's notification arrived: in-app and by webhook (counted by event id).
 * FAULT_LOAD_SECONDS sets how long the load runs (default 60; CI runs a shorter one).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, connect, createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'

const loadSeconds = Number(process.env.FAULT_LOAD_SECONDS ?? 60)
const root = new URL('..', import.meta.url).pathname
const pgBin = execFileSync('sh', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1']).toString().trim()
const say = (line: string) => { process.stdout.write(`${line}\n`) }
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))
const children: ChildProcess[] = []

const freePort = async () => await new Promise<number>((resolve) => {
  const server = createNetServer().listen(0, '127.0.0.1', () => {
    const port = (server.address() as AddressInfo).port
    server.close(() => { resolve(port) })
  })
})

async function waitForPort (port: number, ms = 30_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => { socket.end(); resolve(true) })
      socket.on('error', () => { resolve(false) })
    })
    if (open) return
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`)
    await sleep(100)
  }
}

// --- the services of our own ----------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'haven-faults-'))
chmodSync(work, 0o777)
const pgData = join(work, 'pg')
const pgPort = await freePort()
const asPostgres = (args: string[]) => process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', ...args]] as const : [args[0] ?? '', args.slice(1)] as const
const run = (args: string[]) => { const [command, rest] = asPostgres(args); execFileSync(command, [...rest], { stdio: 'ignore' }) }
run([`${pgBin}/initdb`, '-D', pgData, '-A', 'trust', '-U', 'postgres'])
const pgCtl = (action: string) => run([`${pgBin}/pg_ctl`, '-D', pgData, '-w', '-l', join(pgData, 'log'), '-o', `-p ${pgPort} -k ${work} -c listen_addresses=127.0.0.1 -c fsync=off`, ...(action === 'restart' ? ['-m', 'fast'] : []), action])
pgCtl('start')
const databaseUrl = `postgres://postgres@127.0.0.1:${pgPort}/postgres`

const redisPort = await freePort()
let redis: ChildProcess | undefined
const startRedis = async () => {
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  await waitForPort(redisPort)
}
const stopRedis = async () => {
  const running = redis
  if (running === undefined) return
  const exited = new Promise((resolve) => running.once('exit', resolve))
  running.kill('SIGKILL')
  await exited
}
await startRedis()

const received = new Map<string, number>()
const receiver: Server = createServer((request, response) => {
  const id = String(request.headers['haven-event-id'])
  received.set(id, (received.get(id) ?? 0) + 1)
  request.resume()
  request.on('end', () => response.writeHead(200).end())
})
await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`

const apiPort = await freePort()
const env = {
  PATH: process.env.PATH ?? '',
  NODE_ENV: 'development',
  DATABASE_URL: databaseUrl,
  REDIS_URL: `redis://127.0.0.1:${redisPort}`,
  HAVEN_DATA_DIR: join(work, 'data'),
  HAVEN_BOOTSTRAP_ADMIN_EMAIL: 'faults.admin@example.org',
  HAVEN_BOOTSTRAP_ADMIN_PASSWORD: 'fault run admin password',
  HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true',
  HAVEN_RATE_LIMIT_USER_PER_MIN: '1000000',
  HAVEN_RATE_LIMIT_IP_PER_MIN: '1000000',
  HAVEN_METRICS_PORT: '0',
  HAVEN_JOB_LOCK_MS: '2000',
  HAVEN_REDISPATCH_AFTER_SECONDS: '3',
  PORT: String(apiPort),
  LOG_LEVEL: 'fatal'
}
const startProcess = (entry: string) => {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] })
  children.push(child)
  return child
}
startProcess('services/api/src/server.ts')
await waitForPort(apiPort, 60_000)
let worker = startProcess('services/worker/src/main.ts')
const base = `http://127.0.0.1:${apiPort}`

// --- a client ---------------------------------------------------------------------------------------

/** A request's answer (status 0: none within 10 s), how long it took and when it started (to place it among the injections). */
interface Outcome { status: number, ms: number, body: unknown, startedAt: string }
async function call (token: string, method: string, path: string, body?: unknown): Promise<Outcome> {
  const started = Date.now()
  try {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { ...(token !== '' ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000)
    })
    const text = await response.text()
    return { status: response.status, ms: Date.now() - started, body: text === '' ? null : JSON.parse(text), startedAt: new Date(started).toISOString() }
  } catch {
    return { status: 0, ms: Date.now() - started, body: null, startedAt: new Date(started).toISOString() }
  }
}
const must = async (token: string, method: string, path: string, body?: unknown) => {
  for (let attempt = 0; attempt < 20; attempt++) {
    const outcome = await call(token, method, path, body)
    if (outcome.status >= 200 && outcome.status < 300) return outcome.body as Record<string, string>
    await sleep(250)
  }
  throw new Error(`${method} ${path} never succeeded`)
}

const admin = (await must('', 'POST', '/v1/auth/login', { email: env.HAVEN_BOOTSTRAP_ADMIN_EMAIL, password: env.HAVEN_BOOTSTRAP_ADMIN_PASSWORD })).accessToken ?? ''
const police = await must(admin, 'POST', '/v1/agencies', { name: 'Fault Police', kind: 'police', region: 'Faultshire', contactEmail: 'police@example.org' })
const ngo = await must(admin, 'POST', '/v1/agencies', { name: 'Fault NGO', kind: 'ngo', region: 'Faultshire', contactEmail: 'ngo@example.org' })
const password = 'fault run user password'
await must(admin, 'POST', `/v1/agencies/${police.id}/users`, { email: 'referrer@example.org', name: 'Fault Referrer', roles: ['referrer'], password })
await must(admin, 'POST', `/v1/agencies/${ngo.id}/users`, { email: 'ngo.admin@example.org', name: 'Fault Admin', roles: ['agency_admin', 'caseworker'], password })
const referrer = (await must('', 'POST', '/v1/auth/login', { email: 'referrer@example.org', password })).accessToken ?? ''
const ngoAdmin = (await must('', 'POST', '/v1/auth/login', { email: 'ngo.admin@example.org', password })).accessToken ?? ''
await must(ngoAdmin, 'POST', `/v1/agencies/${ngo.id}/webhooks`, { url: hookUrl, events: ['share.created'] })

// --- load and faults ---------------------------------------------------------------------------------

const outcomes: (Outcome & { what: string })[] = []
const createdReferrals: string[] = []
const createdShares: string[] = []
let loading = true
const body = { subject: { ageGroup: 'child' }, exploitation: { types: ['criminal'], area: 'Faulttown' }, urgency: 'high', consent: { basis: 'child_safeguarding' } }
const client = async () => {
  while (loading) {
    const created = await call(referrer, 'POST', '/v1/referrals', body)
    outcomes.push({ ...created, what: 'create referral' })
    if (created.status !== 201) { await sleep(100); continue }
    const id = (created.body as { id: string }).id
    createdReferrals.push(id)
    const shared = await call(referrer, 'POST', `/v1/referrals/${id}/shares`, { agencyId: ngo.id })
    outcomes.push({ ...shared, what: 'share' })
    if (shared.status === 201) createdShares.push((shared.body as { id: string }).id)
    outcomes.push({ ...await call(referrer, 'GET', `/v1/referrals/${id}`), what: 'read referral' })
  }
}
const superuser = postgres(databaseUrl, { max: 1, onnotice: () => {} })
const injections: string[] = []
const inject = async (what: string, action: () => Promise<void> | void) => {
  injections.push(`${new Date().toISOString()} ${what}`)
  say(`  inject: ${what}`)
  await action()
}
const clients = Array.from({ length: 4 }, client)
const step = loadSeconds * 1000 / 6
await sleep(step)
await inject('pg_terminate_backend of every Haven connection', async () => {
  await superuser`select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and datname = 'postgres' and backend_type = 'client backend'`
})
await sleep(step)
await inject('PostgreSQL restart', () => { pgCtl('restart') })
await sleep(step)
await inject('Redis stopped', stopRedis)
await sleep(step)
await inject('Redis started (empty)', startRedis)
await sleep(step / 2)
await inject('kill -9 of the worker, then a new worker', async () => {
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  worker.kill('SIGKILL')
  await exited
  worker = startProcess('services/worker/src/main.ts')
})
await sleep(step * 1.5)
loading = false
await Promise.all(clients)

// --- checks ---------------------------------------------------------------------------------------------

const checks: { name: string, ok: boolean, detail: string }[] = []
const check = (name: string, ok: boolean, detail = '') => { checks.push({ name, ok, detail }); say(`  ${ok ? 'ok' : 'NOT OK'}  ${name}${detail !== '' ? ` (${detail})` : ''}`) }
say(`load: ${outcomes.length} requests, ${createdReferrals.length} referrals and ${createdShares.length} shares answered 2xx`)

const recovered = await (async () => {
  for (let i = 0; i < 60; i++) {
    const ready = await call('', 'GET', '/readyz')
    if (ready.status === 200) return true
    await sleep(500)
  }
  return false
})()
check('the API is ready again without a restart', recovered)
const last = await call(referrer, 'POST', '/v1/referrals', body)
check('a create after the faults succeeds', last.status === 201, `status ${last.status}`)

const statuses = new Map<number, number>()
for (const o of outcomes) statuses.set(o.status, (statuses.get(o.status) ?? 0) + 1)
const bad = outcomes.filter((o) => !(o.status >= 200 && o.status < 300) && o.status !== 503)
check('every failure was a 503: no 500, no hang, no other error', bad.length === 0, `statuses ${JSON.stringify(Object.fromEntries(statuses))}${bad.length > 0 ? `; e.g. ${bad.slice(0, 3).map((o) => `${o.what} ${o.status} at ${o.startedAt} ${JSON.stringify(o.body).slice(0, 120)}`).join('; ')}` : ''}`)
const slowest = outcomes.reduce((a, b) => (b.ms > a.ms ? b : a), { ms: 0, what: 'none', startedAt: '-' })
check('no request took 10 s', outcomes.every((o) => o.ms < 10_000), `slowest ${slowest.ms} ms (${slowest.what}, started ${slowest.startedAt}; injections below)`)

const audited = async (table: 'referrals' | 'shares', action: string) => await superuser.unsafe(`
  select count(*)::int as n from ${table} x where not exists (
    select 1 from audit_events e where e.target_id = x.id and e.action = '${action}' and e.outcome = 'success')`) as unknown as { n: number }[]
const present = async (table: 'referrals' | 'shares', ids: string[]) => ids.length === 0 ? 0 : ((await superuser.unsafe(`select count(*)::int as n from ${table} where id = any($1::uuid[])`, [ids])) as unknown as { n: number }[])[0]?.n ?? 0
check('every referral answered 201 exists', await present('referrals', createdReferrals) === createdReferrals.length)
check('every share answered 201 exists', await present('shares', createdShares) === createdShares.length)
check('no referral exists without its referral.create audit event', (await audited('referrals', 'referral.create'))[0]?.n === 0)
check('no share exists without its share.create audit event', (await audited('shares', 'share.create'))[0]?.n === 0)

const delivered = async () => {
  const [row] = await superuser`
    select (select count(*)::int from shares) as shares,
           (select count(*)::int from notifications where type = 'share.created') as in_app,
           (select count(*)::int from outbox where processed_at is null) as unprocessed,
           (select count(*)::int from webhook_deliveries where status = 'delivered') as webhooks`
  return row as { shares: number, in_app: number, unprocessed: number, webhooks: number }
}
let counts = await delivered()
for (let i = 0; i < 120 && (counts.unprocessed > 0 || counts.in_app < counts.shares || counts.webhooks < counts.shares); i++) {
  await sleep(500)
  counts = await delivered()
}
const eventIds = await superuser`select id from outbox where type = 'share.created'` as unknown as { id: string }[]
const missing = eventIds.filter((row) => !received.has(row.id))
check('every share reached the recipient in-app', counts.in_app === counts.shares, `${counts.in_app} of ${counts.shares}`)
check('every share.created event reached the webhook (by event id)', missing.length === 0, `${eventIds.length - missing.length} of ${eventIds.length}; ${[...received.values()].filter((n) => n > 1).length} seen more than once`)

// --- teardown -------------------------------------------------------------------------------------------

await superuser.end()
for (const child of children) child.kill('SIGKILL')
await stopRedis()
receiver.close()
try { pgCtl('stop') } catch { /* already down */ }
rmSync(work, { recursive: true, force: true })
say('injected:')
for (const line of injections) say(`  ${line}`)
const failed = checks.filter((c) => !c.ok).length
say(`faults: ${checks.length - failed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
