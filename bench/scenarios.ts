/**
 * The bench's world and its scenarios, shared by `pnpm bench` (run.ts) and `pnpm bench:scale`
 * (scale.ts): the people and the template referral, the API scenarios with the pool each draws its
 * records from, the capture app, and the measurement of one scenario (API, then pgbench).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildApp, connectRedis, loadConfig, loadSigningKeys } from '@haven/api'
import { openDatabase } from '@haven/schema'
import { removeQueues } from '@haven/worker'
import { hashPassword } from '../services/api/src/auth/passwords.ts'
import {
  type BenchDatabase, describer, freePort, type HttpRequest, idPrefixes, type LoadResult, type PgbenchScript, pgbenchScript, type Pool,
  poolId, productionSecrets, Recorder, redisUrl, round, runHttp, runPgbench, type Sampled, say, type Service, startService, status, undoOnInterrupt,
  waitUntilUp, whileSampling
} from './harness.ts'

const password = 'bench password 1234'

/** A referral with every field group: what a police officer records for an adult who consented. */
export const referralBody = JSON.stringify({
  subject: {
    ageGroup: 'adult', gender: 'female', languages: ['ro', 'en'], interpreterNeeded: true,
    givenName: 'Benchmark', familyName: 'Person', aliases: ['B. Person'], dateOfBirth: '1990-01-01', nationality: 'Benchland',
    contact: { phone: '+44 7700 900000', address: '1 Bench Street, Benchtown', safeToContact: true, notes: 'Call after 6pm' }
  },
  exploitation: {
    types: ['labour'], area: 'Benchtown', indicators: ['restricted_movement', 'no_id_documents', 'debt_bondage'],
    narrative: 'Found working at a car wash with no days off; employer holds passport. '.repeat(8), encounteredAt: '2026-11-01T10:00:00.000Z'
  },
  urgency: 'high',
  needs: ['accommodation', 'interpreter', 'legal'],
  consent: { basis: 'consent', recordedAt: '2026-11-01T11:00:00.000Z', method: 'verbal', sharingAllowedWith: 'any' }
})

export interface Stack {
  base: string
  /** The environment the API and worker run with (the capture app is built from the same). */
  env: Record<string, string>
  api: Service
  worker: Service | undefined
  stop: () => Promise<void>
}

/**
 * The API (and, unless `worker` is false, the worker) as production processes on the bench database:
 * NODE_ENV=production with secrets made for the run, rate limits raised so they don't cap the load,
 * a queue prefix of their own on the shared Redis.
 */
export async function startStack (db: BenchDatabase, options: { worker: boolean, apiNodeArgs?: string[] }): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'haven-bench-'))
  const apiPort = await freePort()
  const metricsPort = await freePort()
  const base = `http://127.0.0.1:${apiPort}`
  const env = {
    NODE_ENV: 'production', DATABASE_URL: db.url, REDIS_URL: redisUrl, PORT: String(apiPort), HOST: '127.0.0.1', HAVEN_PUBLIC_URL: base,
    HAVEN_DATA_DIR: dir, HAVEN_RATE_LIMIT_USER_PER_MIN: '1000000', HAVEN_RATE_LIMIT_IP_PER_MIN: '1000000',
    HAVEN_QUEUE_PREFIX: `bench-${db.name}`, HAVEN_METRICS_PORT: String(metricsPort), ...productionSecrets()
  }
  const started: Service[] = []
  // Once, whoever asks first (the run's own clean-up, an interruption, a failed start): a second
  // call waits for the first.
  let stopping: Promise<void> | undefined
  const stop = async () => {
    stopping ??= (async () => {
      for (const service of [...started].reverse()) await service.stop()
      // The worker's queues under the run's prefix, which would otherwise stay in the shared Redis.
      await removeQueues(redisUrl, env.HAVEN_QUEUE_PREFIX)
      // The services' logs (a failed start has shown their end by now) and data directory.
      rmSync(dir, { recursive: true, force: true })
      undo.cancel()
    })()
    await stopping
  }
  // Registered after the run's database, so an interruption stops the services before the drop.
  const undo = undoOnInterrupt(stop)
  try {
    const api = startService('api', 'services/api', env, dir, options.apiNodeArgs)
    started.push(api)
    await waitUntilUp(api, `${base}/readyz`)
    let worker: Service | undefined
    if (options.worker) {
      worker = startService('worker', 'services/worker', env, dir)
      started.push(worker)
      await waitUntilUp(worker, `http://127.0.0.1:${metricsPort}/metrics`)
    }
    return { base, env, api, worker, stop }
  } catch (error) {
    // The error that stopped the start, not one from the clean-up.
    await stop().catch(() => {})
    throw error
  }
}

export interface People {
  police: string
  scopedNgo: string
  acceptingNgo: string
  referrerId: string
  scopedCaseworkerId: string
  tokens: { referrer: string, auditor: string, scoped: string, accepting: string }
  /** A referral made through the API: what the seeded ones are copies of. */
  templateId: string
}

/**
 * A police force (a referrer and an auditor), a shelter whose caseworker sees referrals shared with
 * it (scoped view), an outreach charity whose caseworker accepts shares; each signed in through the API.
 */
export async function seedPeople (db: BenchDatabase, base: string): Promise<People> {
  const passwordHash = await hashPassword(password)
  const agency = async (name: string, kind: string) =>
    (await db.sql<{ id: string }[]>`insert into agencies (name, kind, region, contact_email) values (${name}, ${kind}, 'Benchshire', ${`${kind}@example.org`}) returning id`)[0]?.id ?? ''
  const user = async (agencyId: string, email: string, roles: string) =>
    (await db.sql<{ id: string }[]>`insert into users (agency_id, email, name, roles, password_hash) values (${agencyId}, ${email}, 'Bench User', ${roles}::role[], ${passwordHash}) returning id`)[0]?.id ?? ''
  const police = await agency('Bench Police', 'police')
  const scopedNgo = await agency('Bench Shelter', 'ngo')
  const acceptingNgo = await agency('Bench Outreach', 'ngo')
  const referrerId = await user(police, 'referrer@bench.example.org', '{referrer}')
  await user(police, 'auditor@bench.example.org', '{auditor}')
  const scopedCaseworkerId = await user(scopedNgo, 'caseworker@shelter.example.org', '{caseworker}')
  await user(acceptingNgo, 'caseworker@outreach.example.org', '{caseworker}')
  const login = async (email: string) => {
    const response = await fetch(`${base}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }) })
    if (response.status !== 200) throw new Error(`login ${email}: ${response.status} ${await response.text()}`)
    return (await response.json() as { accessToken: string }).accessToken
  }
  const tokens = {
    referrer: await login('referrer@bench.example.org'),
    auditor: await login('auditor@bench.example.org'),
    scoped: await login('caseworker@shelter.example.org'),
    accepting: await login('caseworker@outreach.example.org')
  }
  const template = await fetch(`${base}/v1/referrals`, { method: 'POST', headers: { authorization: `Bearer ${tokens.referrer}`, 'content-type': 'application/json' }, body: referralBody })
  if (template.status !== 201) throw new Error(`template referral: ${template.status} ${await template.text()}`)
  const templateId = (await template.json() as { id: string }).id
  return { police, scopedNgo, acceptingNgo, referrerId, scopedCaseworkerId, tokens, templateId }
}

export interface Scenario {
  key: string
  title: string
  token: string
  pool?: Pool
  /** The two pool members the script is captured with. */
  captureMembers?: [number, number]
  request: (n: number | undefined) => HttpRequest
  /** The pool member of each API request. */
  pick?: () => number
  /** Fixed numbers of requests instead of durations (each accept consumes a pending share). */
  amounts?: { warmup: number, api: number, pgbenchPerClient: number }
}

const randomIn = (from: number, to: number) => from + Math.floor(Math.random() * (to - from + 1))
const referralPath = (n: number | undefined, suffix = '') => `/v1/referrals/${poolId(idPrefixes.referral, n ?? 1)}${suffix}`

/**
 * The scenarios. Reads draw a referral at random from their pool; accept-share takes pending shares
 * in order: 1 and 2 for the capture, then the API's warm-up and run, then pgbench's, each once.
 */
export function scenarios (people: People, sizes: { referrals: number, scoped: number, accept?: { warmup: number, api: number, pgbenchPerClient: number } }): Scenario[] {
  const randomPool = (to: number): Pool => ({ kind: 'random', from: 1, to, ids: { referral: idPrefixes.referral } })
  const list: Scenario[] = [
    {
      key: 'create', title: 'create referral', token: people.tokens.referrer,
      request: () => ({ method: 'POST', path: '/v1/referrals', body: referralBody })
    },
    {
      key: 'read-origin', title: 'read referral (origin view)', token: people.tokens.referrer,
      pool: randomPool(sizes.referrals), captureMembers: [1, 2], pick: () => randomIn(1, sizes.referrals),
      request: (n) => ({ method: 'GET', path: referralPath(n) })
    },
    {
      key: 'read-scoped', title: 'read referral (scoped view)', token: people.tokens.scoped,
      pool: randomPool(sizes.scoped), captureMembers: [1, 2], pick: () => randomIn(1, sizes.scoped),
      request: (n) => ({ method: 'GET', path: referralPath(n) })
    },
    {
      key: 'list', title: 'list referrals', token: people.tokens.referrer,
      request: () => ({ method: 'GET', path: '/v1/referrals' })
    }
  ]
  const accept = sizes.accept
  if (accept !== undefined) {
    let next = 3
    list.push({
      key: 'accept', title: 'accept share', token: people.tokens.accepting,
      pool: { kind: 'sequential', first: 3 + accept.warmup + accept.api, perClient: accept.pgbenchPerClient, ids: { referral: idPrefixes.referral, share: idPrefixes.pendingShare } },
      captureMembers: [1, 2], pick: () => next++, amounts: accept,
      request: (n) => ({ method: 'POST', path: referralPath(n, `/shares/${poolId(idPrefixes.pendingShare, n ?? 1)}/accept`) })
    })
  }
  list.push({
    key: 'access-log', title: 'audit: access log of a referral', token: people.tokens.auditor,
    pool: randomPool(sizes.referrals), captureMembers: [1, 2], pick: () => randomIn(1, sizes.referrals),
    request: (n) => ({ method: 'GET', path: referralPath(n, '/access-log') })
  })
  return list
}

export interface CaptureApp {
  /** The scenario's statements, captured from two requests, as a pgbench script. */
  script: (scenario: Scenario) => Promise<PgbenchScript>
  close: () => Promise<void>
}

/** The API's own code (buildApp) on the bench database with one connection, every statement recorded. */
export async function startCaptureApp (db: BenchDatabase, env: Record<string, string>): Promise<CaptureApp> {
  const recorder = new Recorder()
  const config = loadConfig({ ...env, LOG_LEVEL: 'silent' })
  const database = await openDatabase({ url: db.url, max: 1, onQuery: recorder.onQuery })
  const redis = connectRedis(redisUrl)
  const app = await buildApp({ config, database, redis, keys: loadSigningKeys(config) })
  const describe = describer(db.sql)
  const injectOnce = async (scenario: Scenario, n: number | undefined) => {
    const request = scenario.request(n)
    const response = await app.inject({
      method: request.method, url: request.path, remoteAddress: '127.0.0.1',
      headers: { authorization: `Bearer ${scenario.token}`, ...(request.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(request.body !== undefined ? { payload: request.body } : {})
    })
    if (response.statusCode >= 300) throw new Error(`capture of ${scenario.title}: ${response.statusCode} ${response.body}`)
  }
  return {
    script: async (scenario) => {
      const first = await recorder.record(async () => { await injectOnce(scenario, scenario.captureMembers?.[0]) })
      const second = await recorder.record(async () => { await injectOnce(scenario, scenario.captureMembers?.[1]) })
      return await pgbenchScript([first, second], scenario.pool, scenario.captureMembers, describe)
    },
    close: async () => {
      await app.close()
      redis.disconnect()
      await database.close()
    }
  }
}

export interface Side extends LoadResult {
  /** CPU of the API, worker and bench (autocannon) processes while the side ran, % of one core. */
  cpuPercent: Record<string, number>
  /** CPU of the bench database's PostgreSQL backends, % of one core. */
  backendCpuPercent: number
}

export interface ScenarioResult {
  key: string
  title: string
  statementsPerRequest: number
  api: Side
  pgbench: Side
  /** API requests/s ÷ pgbench transactions/s. */
  ratio: number
  peakRssMb: Record<string, number>
  script: string
  /** Parameters that varied between the captures in a way the script could not follow (constants used). */
  unexplainedParameters: string[]
}

const side = <T extends LoadResult>(run: Sampled<T>): Side => ({ ...run.result, cpuPercent: run.cpuPercent, backendCpuPercent: run.backendCpuPercent })

/** "API 95%, PostgreSQL 60%, …" for the processes named. */
const cpuLine = (run: Side, names: Record<string, string>) =>
  [...Object.entries(names).map(([key, name]) => [name, run.cpuPercent[key]] as const), ['PostgreSQL', run.backendCpuPercent] as const]
    .filter(([, value]) => value !== undefined).map(([name, value]) => `${name} ${value}%`).join(', ')

/** Captures the scenario's script, warms the API up, runs autocannon, then pgbench, at `concurrency`. */
export async function measure (options: {
  db: BenchDatabase, stack: Stack, capture: CaptureApp, scenario: Scenario, concurrency: number, seconds: number, warmupSeconds: number, label: string
}): Promise<ScenarioResult> {
  const { db, stack, scenario, concurrency, seconds } = options
  say(options.label)
  const script = await options.capture.script(scenario)
  say(`  ${script.statements} statements per request, captured; ${script.unexplained.length > 0 ? `varying parameters taken as constants: ${script.unexplained.join('; ')}` : 'every varying parameter followed'}`)
  const pids: Record<string, number> = { api: stack.api.pid, bench: process.pid, ...(stack.worker !== undefined ? { worker: stack.worker.pid } : {}) }
  const next = () => scenario.request(scenario.pick?.())
  const amounts = scenario.amounts
  await runHttp({
    base: stack.base, token: scenario.token, connections: concurrency, next,
    ...(amounts !== undefined ? { amount: amounts.warmup } : { seconds: options.warmupSeconds }),
    progress: (line) => { status(`  warm-up: ${line}`) }
  })
  const apiRun = await whileSampling(pids, db, async () => await runHttp({
    base: stack.base, token: scenario.token, connections: concurrency, next,
    ...(amounts !== undefined ? { amount: amounts.api } : { seconds }),
    progress: (line) => { status(`  API: ${line}`) }
  }))
  const api = side(apiRun)
  if (api.failed > 0) say(`  API: ${api.failed} requests failed: ${JSON.stringify(api.statusCodes)}`)
  say(`  API      ${api.perSecond} req/s, p50 ${api.p50} ms, p99 ${api.p99} ms; CPU: ${cpuLine(api, { api: 'API', bench: 'autocannon', worker: 'worker' })}`)
  const pgbenchRun = await whileSampling(pids, db, async () => await runPgbench({
    url: db.url, script, clients: concurrency,
    ...(amounts !== undefined ? { transactionsPerClient: amounts.pgbenchPerClient } : { seconds }),
    progress: (line) => { status(`  pgbench: ${line}`) }
  }))
  const pgbench = side(pgbenchRun)
  const ratio = round(api.perSecond / Math.max(pgbench.perSecond, 1))
  say(`  pgbench  ${pgbench.perSecond} tps,   p50 ${pgbench.p50} ms, p99 ${pgbench.p99} ms; CPU: ${cpuLine(pgbench, { worker: 'worker' })}; ratio ${ratio}`)
  return {
    key: scenario.key,
    title: scenario.title,
    statementsPerRequest: script.statements,
    api,
    pgbench,
    ratio,
    peakRssMb: Object.fromEntries(Object.keys(pids).map((name) => [name, Math.max(apiRun.peakRssMb[name] ?? 0, pgbenchRun.peakRssMb[name] ?? 0)])),
    script: script.script,
    unexplainedParameters: script.unexplained
  }
}
