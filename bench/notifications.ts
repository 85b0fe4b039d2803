/**
 * `pnpm bench:notifications`: commit-to-webhook latency and delivery throughput of the notification
 * worker, next to the raw BullMQ add-and-process rate on the same Redis, measured in the same run.
 *
 * 1. throughput, in BENCH_ROUNDS rounds (4; 2 at least): N shares created through the API while no worker runs,
 *    then a worker started on them (outbox → relay → fan-out job → delivery job → signed POST →
 *    recorded by a receiver in this process). Two rates: from the worker's start to the last
 *    webhook, which counts the worker's start (its connections, each new PostgreSQL backend's first
 *    statements, the pipeline filling: 140–250 ms here), and from the first webhook to the last,
 *    near the rate of a worker already running;
 * 2. baseline: in each round, right before the drain, N no-op jobs added one by one and processed
 *    by one BullMQ worker with our webhook queue's concurrency (a new queue, worker and connection),
 *    with its two rates measured the same way (from the first add, and from the first job processed
 *    to the last). Like is compared with like, round by round: round 1 is both codes' first run in
 *    this process (cold: not yet compiled), and each later round a warmer one. A single run varies
 *    by a fifth or more on these machines, so the summary is the median over rounds 2 on. Next to it,
 *    for reference, the same jobs added with addBulk (200 a round trip, as the worker adds its own):
 *    a stronger baseline, reported, not the target;
 * 3. latency: N shares created through the API at a steady pace with the worker running; for each
 *    webhook, receipt time minus the event's commit time (occurredAt).
 * Runs against a fresh database on the PostgreSQL at DATABASE_URL and the Redis at REDIS_URL.
 */
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildApp, connectRedis, loadConfig, loadSigningKeys } from '@haven/api'
import { agencies, openDatabase, queueOf, sql, users } from '@haven/schema'
import { loadWorkerConfig, removeQueues, startWorker } from '@haven/worker'
import { Queue, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import postgres from 'postgres'
import { hash } from '@node-rs/argon2'

const N = Number(process.env.BENCH_SHARES ?? 1000)
const concurrency = 8
// Round 1 is cold; the summary needs one round after it at least.
const roundCount = Math.max(2, Number(process.env.BENCH_ROUNDS ?? 4) || 4)
const serverUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const say = (line: string) => { process.stderr.write(`${line}\n`) }
const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(p * values.length))] ?? 0

/** Jobs per second from the first add to the last job processed, and from the first job processed to the last. */
async function rawBullmq (bulk: boolean): Promise<{ rate: number, steadyRate: number }> {
  const prefix = `bench-${randomUUID().slice(0, 8)}`
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null })
  const queue = new Queue('raw', { connection, prefix })
  let done = 0
  let first = 0
  let last = 0
  let allDone = () => {}
  const finished = new Promise<void>((resolve) => { allDone = resolve })
  const worker = new Worker('raw', async () => {
    last = performance.now()
    if (done++ === 0) first = last
    if (done === N) allDone()
  }, { connection, prefix, concurrency: queueOf['webhook.deliver'].concurrency })
  worker.on('error', () => {})
  const started = performance.now()
  if (bulk) {
    for (let i = 0; i < N; i += 200) {
      await queue.addBulk(Array.from({ length: Math.min(200, N - i) }, (_, k) => ({ name: 'noop', data: { i: i + k }, opts: { jobId: `raw-${i + k}`, removeOnComplete: true } })))
    }
  } else {
    for (let i = 0; i < N; i++) await queue.add('noop', { i }, { jobId: `raw-${i}`, removeOnComplete: true })
  }
  await finished
  await worker.close()
  await queue.obliterate({ force: true })
  await queue.close()
  connection.disconnect()
  return { rate: N / ((last - started) / 1000), steadyRate: (N - 1) / ((last - first) / 1000) }
}

async function main () {
  const name = `haven_bench_${Date.now()}`
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  const databaseUrl = url.toString()
  const database = await openDatabase({ url: databaseUrl, max: 10 })
  await database.migrate()

  const received: { at: number, occurredAt: number }[] = []
  const receiver = createServer((request, response) => {
    let body = ''
    request.on('data', (chunk: Buffer) => { body += chunk.toString() })
    request.on('end', () => {
      received.push({ at: Date.now(), occurredAt: Date.parse((JSON.parse(body) as { occurredAt: string }).occurredAt) })
      response.writeHead(200).end()
    })
  })
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`

  const dataDir = mkdtempSync(join(tmpdir(), 'haven-bench-'))
  const env = { NODE_ENV: 'test', DATABASE_URL: databaseUrl, REDIS_URL: redisUrl, HAVEN_DATA_DIR: dataDir, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true', LOG_LEVEL: 'warn' }
  const config = loadConfig({ ...env, HAVEN_RATE_LIMIT_USER_PER_MIN: '1000000', HAVEN_RATE_LIMIT_IP_PER_MIN: '1000000' })
  const keys = loadSigningKeys(config)
  const redis = connectRedis(redisUrl)
  const app = await buildApp({ config, database, redis, keys })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

  const passwordHash = await hash('bench password 123')
  const [police] = await database.db.insert(agencies).values({ name: 'Bench Police', kind: 'police', region: 'Benchshire', contactEmail: 'police@example.org' }).returning()
  const [ngo] = await database.db.insert(agencies).values({ name: 'Bench NGO', kind: 'ngo', region: 'Benchshire', contactEmail: 'ngo@example.org' }).returning()
  if (police === undefined || ngo === undefined) throw new Error('no agencies')
  await database.db.insert(users).values([
    { agencyId: police.id, email: 'referrer@example.org', name: 'Bench Referrer', roles: ['referrer'], passwordHash },
    { agencyId: ngo.id, email: 'ngo-admin@example.org', name: 'Bench Admin', roles: ['agency_admin'], passwordHash }
  ])
  const call = async (token: string, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${base}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
    if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
    return await response.json() as { id: string, accessToken: string }
  }
  const login = async (email: string) => (await call('', 'POST', '/v1/auth/login', { email, password: 'bench password 123' })).accessToken
  const referrer = await login('referrer@example.org')
  await call(await login('ngo-admin@example.org'), 'POST', `/v1/agencies/${ngo.id}/webhooks`, { url: hookUrl, events: ['share.created'] })
  const body = { subject: { ageGroup: 'child' }, exploitation: { types: ['criminal'], area: 'Benchtown' }, urgency: 'high', consent: { basis: 'child_safeguarding' } }
  const createShares = async (count: number) => {
    let next = 0
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++
        const referral = await call(referrer, 'POST', '/v1/referrals', body)
        await call(referrer, 'POST', `/v1/referrals/${referral.id}/shares`, { agencyId: ngo.id })
      }
    }))
  }
  const workerConfig = loadWorkerConfig({ ...env, HAVEN_METRICS_PORT: '0', HAVEN_QUEUE_PREFIX: `bench-${Date.now()}` })
  const waitForDeliveries = async (count: number) => { while (received.length < count) await new Promise((resolve) => setTimeout(resolve, 5)) }

  /**
   * A worker started on the backlog; its rate from its start to the last webhook received, and from
   * the first webhook to the last.
   */
  const drain = async () => {
    const started = Date.now()
    const worker = await startWorker(workerConfig)
    await waitForDeliveries(N)
    await worker.close()
    const times = received.map((r) => r.at)
    const first = Math.min(...times)
    const last = Math.max(...times)
    return { rate: N / ((last - started) / 1000), steadyRate: (N - 1) / ((last - first) / 1000), firstMs: first - started }
  }
  // Round by round, a raw run right before each drain: both are their code's first run in this
  // process in round 1, and their k-th in round k.
  const rounds = []
  for (let round = 1; round <= roundCount; round++) {
    received.length = 0
    say(`round ${round}: ${N} shares created with no worker running, a raw BullMQ run, then a worker started on the shares…`)
    await createShares(N)
    const raw = await rawBullmq(false)
    const drained = await drain()
    const ratio = drained.rate / raw.rate
    const steadyRatio = drained.steadyRate / raw.steadyRate
    rounds.push({
      deliveriesPerSecond: Math.round(drained.rate),
      rawBullmqJobsPerSecond: Math.round(raw.rate),
      ratio: Number(ratio.toFixed(2)),
      firstDeliveryMs: drained.firstMs,
      steadyDeliveriesPerSecond: Math.round(drained.steadyRate),
      rawBullmqSteadyJobsPerSecond: Math.round(raw.steadyRate),
      steadyRatio: Number(steadyRatio.toFixed(2))
    })
    say(`  from the worker's start ${drained.rate.toFixed(0)} deliveries/s (first at ${drained.firstMs} ms), raw BullMQ ${raw.rate.toFixed(0)} jobs/s: ${ratio.toFixed(2)}; first to last ${drained.steadyRate.toFixed(0)}/s against ${raw.steadyRate.toFixed(0)}/s: ${steadyRatio.toFixed(2)}`)
  }
  const warm = rounds.slice(1)
  const rawBulk = await rawBullmq(true)

  say(`latency: creating ${N} shares with the worker running…`)
  received.length = 0
  const worker = await startWorker(workerConfig)
  const apiStarted = performance.now()
  await createShares(N)
  const apiRate = (2 * N) / ((performance.now() - apiStarted) / 1000)
  await waitForDeliveries(N)
  const latencies = received.map((r) => r.at - r.occurredAt)
  await worker.close()
  const enqueue = await database.rows<{ ms: number }>(sql`
    select (extract(epoch from relayed_at - created_at) * 1000)::float8 as ms from outbox
    where type = 'share.created' and created_at > (select max(created_at) from outbox) - make_interval(secs => ${(performance.now() - apiStarted) / 1000})`)
  const enqueueMs = enqueue.map((row) => Number(row.ms))

  const results = {
    when: new Date().toISOString(),
    shares: N,
    rounds,
    coldRatioToRawBullmq: rounds[0]?.ratio,
    warmRatioToRawBullmq: percentile(warm.map((r) => r.ratio), 0.5),
    warmSteadyRatioToRawBullmq: percentile(warm.map((r) => r.steadyRatio), 0.5),
    rawBullmqBulkJobsPerSecond: Math.round(rawBulk.rate),
    commitToEnqueueMs: { p50: Math.round(percentile(enqueueMs, 0.5)), p99: Math.round(percentile(enqueueMs, 0.99)) },
    commitToWebhookMs: { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), max: Math.max(...latencies) },
    apiRequestsPerSecondWhileDelivering: Math.round(apiRate)
  }
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`)
  mkdirSync(new URL('results/', import.meta.url), { recursive: true })
  writeFileSync(new URL(`results/notifications-${Date.now()}.json`, import.meta.url), JSON.stringify(results, null, 2))

  // The worker's queues under this run's prefix, which would otherwise stay in Redis.
  await removeQueues(redisUrl, workerConfig.queuePrefix)
  await app.close()
  redis.disconnect()
  receiver.close()
  await database.close()
  await admin.unsafe(`drop database if exists "${name}" with (force)`)
  await admin.end()
}

await main()
