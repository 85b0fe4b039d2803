import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openDatabase, sql, users } from '@haven/schema'
import { removeQueues } from '@haven/worker'
import postgres from 'postgres'
import t, { type Test } from 'tap'
import { bootstrapAdmin } from '../src/bootstrap.ts'
import { freePort } from './channels.ts'
import { freshDatabaseUrl } from './helper.ts'

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/** A throwaway migrated database of the test's own (bootstrap needs one with no admin yet). */
async function freshDatabase (t: Test) {
  const database = await openDatabase({ url: await freshDatabaseUrl(t), max: 4 })
  t.teardown(async () => { await database.close() })
  return database
}

t.test('the bootstrap admin is created once, however many starts race', async (t) => {
  const database = await freshDatabase(t)
  const config = { env: 'test' as const, bootstrapAdminEmail: 'first.admin@example.org', bootstrapAdminPassword: 'a long enough password' }
  const results = await Promise.all([bootstrapAdmin(database, config), bootstrapAdmin(database, config), bootstrapAdmin(database, config)])
  t.equal(results.filter((r) => r.created).length, 1, 'one start created it')
  t.same(await bootstrapAdmin(database, config), { created: false }, 'a later start creates nothing')
  const admins = await database.db.select().from(users).where(sql`'platform_admin' = any(${users.roles})`)
  t.equal(admins.length, 1)
  t.equal(admins[0]?.email, 'first.admin@example.org')
})

t.test('in production, no admin is made up: the credentials must be configured', async (t) => {
  const database = await freshDatabase(t)
  await t.rejects(bootstrapAdmin(database, { env: 'production', bootstrapAdminEmail: undefined, bootstrapAdminPassword: undefined }), /HAVEN_BOOTSTRAP_ADMIN_PASSWORD/)
  const generated = await bootstrapAdmin(database, { env: 'development', bootstrapAdminEmail: undefined, bootstrapAdminPassword: undefined })
  t.ok(generated.created && generated.generatedPassword !== undefined && generated.generatedPassword.length >= 20, 'outside production a password is generated')
})

/** Polls until the server answers, for at most `ms`. */
async function waitForHealth (base: string, child: ChildProcess, ms = 60_000) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`haven exited with ${child.exitCode}`)
    try {
      if ((await fetch(`${base}/healthz`)).ok) return
    } catch { /* not listening yet */ }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error('haven did not start in time')
}

t.test('pnpm start on embedded PGlite: start, sign in, stop, start again, the data is still there', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'haven-pglite-'))
  const queuePrefix = `test-start-${process.pid}-${Date.now()}`
  t.teardown(async () => {
    rmSync(dataDir, { recursive: true, force: true })
    await removeQueues(redisUrl, queuePrefix)
  })
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const root = new URL('../../../', import.meta.url).pathname
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'development',
    PORT: String(port),
    HAVEN_DATA_DIR: dataDir,
    REDIS_URL: redisUrl,
    HAVEN_QUEUE_PREFIX: queuePrefix,
    HAVEN_BOOTSTRAP_ADMIN_EMAIL: 'pglite.admin@example.org',
    HAVEN_BOOTSTRAP_ADMIN_PASSWORD: 'pglite admin password',
    HAVEN_METRICS_PORT: '0',
    LOG_LEVEL: 'warn'
  }
  const start = async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] })
    await waitForHealth(base, child)
    return child
  }
  const stop = async (child: ChildProcess) => {
    const exited = new Promise<number | null>((resolve) => { child.on('exit', (code) => { resolve(code) }) })
    child.kill('SIGTERM')
    return await exited
  }
  const signIn = async () => await fetch(`${base}/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'pglite.admin@example.org', password: 'pglite admin password' })
  })

  const first = await start()
  const login = await signIn()
  t.equal(login.status, 200, 'the bootstrap admin signs in')
  const { accessToken } = await login.json() as { accessToken: string }
  const created = await fetch(`${base}/v1/agencies`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${accessToken}` },
    body: JSON.stringify({ name: 'Persisted Test Agency', kind: 'ngo', region: 'Testshire', contactEmail: 'inbox@example.org' })
  })
  t.equal(created.status, 201)
  const agencyId = (await created.json() as { id: string }).id
  t.equal(await stop(first), 0, 'a clean shutdown on SIGTERM')

  const second = await start()
  t.teardown(async () => { if (second.exitCode === null) await stop(second) })
  const again = await signIn()
  t.equal(again.status, 200, 'the same admin signs in after a restart')
  const token = (await again.json() as { accessToken: string }).accessToken
  const agency = await fetch(`${base}/v1/agencies/${agencyId}`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(agency.status, 200, 'the agency created before the restart is still there')
  const directory = await fetch(`${base}/v1/agencies?limit=200`, { headers: { authorization: `Bearer ${token}` } })
  const names = (await directory.json() as { items: { name: string }[] }).items.map((a) => a.name)
  t.equal(names.filter((n) => n === 'Haven platform').length, 1, 'no second bootstrap on the second start')
  t.equal(await stop(second), 0)
})

t.test('the production bundles: pnpm build, then each start script on an empty database', async (t) => {
  const root = new URL('../../../', import.meta.url).pathname
  execFileSync(process.execPath, ['--import', 'tsx', 'scripts/build.ts'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] })
  // An empty database: the API's bundle must find and apply the migrations itself.
  const serverUrl = process.env.HAVEN_TEST_SERVER_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
  const name = `haven_bundle_${Date.now()}`
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  const dataDir = mkdtempSync(join(tmpdir(), 'haven-bundle-'))
  t.teardown(async () => {
    rmSync(dataDir, { recursive: true, force: true })
    await admin.unsafe(`drop database if exists "${name}" with (force)`)
    await admin.end()
    await removeQueues(redisUrl, `bundle-${name}`)
  })
  const [port, metricsPort] = [await freePort(), await freePort()]
  const env = {
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'development',
    DATABASE_URL: url.toString(),
    REDIS_URL: redisUrl,
    PORT: String(port),
    HAVEN_DATA_DIR: dataDir,
    HAVEN_QUEUE_PREFIX: `bundle-${name}`,
    HAVEN_METRICS_PORT: String(metricsPort),
    HAVEN_BOOTSTRAP_ADMIN_EMAIL: 'bundle.admin@example.org',
    HAVEN_BOOTSTRAP_ADMIN_PASSWORD: 'bundle admin password',
    LOG_LEVEL: 'warn'
  }
  /** Runs a package's start script (`node <flags> <bundle>`) as `pnpm --filter … start` would. */
  const startPackage = (dir: string) => {
    const words = (JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start.split(/\s+/)
    t.equal(words[0], 'node', `${dir} starts with node, not through tsx`)
    const child = spawn(process.execPath, words.slice(1), { cwd: join(root, dir), env, stdio: ['ignore', 'ignore', 'inherit'] })
    const exited = new Promise<number | null>((resolve) => { child.on('exit', (code) => { resolve(code) }) })
    const stop = async () => { if (child.exitCode === null) child.kill('SIGTERM'); return await exited }
    t.teardown(stop)
    return { child, stop }
  }

  const api = startPackage('services/api')
  await waitForHealth(`http://127.0.0.1:${port}`, api.child)
  const login = await fetch(`http://127.0.0.1:${port}/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'bundle.admin@example.org', password: 'bundle admin password' })
  })
  t.equal(login.status, 200, 'the bundled API migrated the empty database, made the admin and signs it in')
  const worker = startPackage('services/worker')
  const database = await openDatabase({ url: url.toString(), max: 1 })
  t.teardown(async () => { await database.close() })
  const deadline = Date.now() + 30_000
  let sealed = 0
  while (sealed === 0 && Date.now() < deadline && worker.child.exitCode === null) {
    const [row] = await database.rows<{ n: number }>(sql`select count(*)::int as n from audit_seals`)
    sealed = row?.n ?? 0
    if (sealed === 0) await new Promise((resolve) => setTimeout(resolve, 200))
  }
  t.ok(sealed > 0, 'the bundled worker seals the sign-in\'s audit events')
  t.equal(await worker.stop(), 0, 'the worker stops cleanly on SIGTERM')
  t.equal(await api.stop(), 0, 'the API stops cleanly on SIGTERM')
})
