/**
 * `pnpm bench:notifications`: commit-to-webhook latency and delivery throughput of the notification
 * worker, next to the raw BullMQ add-and-process rate on the same Redis, measured in the same run.
 *
 * 1. throughput: N shares created through the API while the worker is stopped, then the worker is
 *    started and the time until the receiver has all N webhooks is measured (outbox → relay →
 *    fan-out job → delivery job → signed POST → recorded);
 * 2. baseline, around the worker's run (the machine is shared: the nearer in time, the fairer):
 *    N no-op jobs added one by one and processed by one worker with our webhook queue's concurrency,
 *    twice right before and once right after; the ratio is against the median of the three. Next to
 *    it, for reference, the same jobs added with addBulk (200 a round trip, as the worker adds its
 *    own): a stronger baseline, reported, not the target;
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
const serverUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const say = (line: string) => { process.stderr.write(`${line}\n`) }
const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(p * values.length))] ?? 0

async function rawBullmq (bulk: boolean): Promise<number> {
  const prefix = `bench-${randomUUID().slice(0, 8)}`
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null })
  const queue = new Queue('raw', { connection, prefix })
  let done = 0
  let allDone = () => {}
  const finished = new Promise<void>((resolve) => { allDone = resolve })
  const worker = new Worker('raw', async () => {
    done++
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
  const seconds = (performance.now() - started) / 1000
  await worker.close()
  await queue.obliterate({ force: true })
  await queue.close()
  connection.disconnect()
  return N / seconds
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

  say(`throughput: creating ${N} shares with the worker stopped…`)
  await createShares(N)
  say(`raw BullMQ: adding and processing ${N} jobs, one by one (twice), then in bulk…`)
  const rawRates = [await rawBullmq(false), await rawBullmq(false)]
  const rawBulkRate = await rawBullmq(true)
  say(`  ${rawRates.map((r) => r.toFixed(0)).join(', ')} jobs/s one by one, ${rawBulkRate.toFixed(0)} jobs/s in bulk`)
  const started = performance.now()
  let worker = await startWorker(workerConfig)
  await waitForDeliveries(N)
  const deliveryRate = N / ((performance.now() - started) / 1000)
  say(`  ${deliveryRate.toFixed(0)} deliveries/s`)
  await worker.close()
  rawRates.push(await rawBullmq(false))
  // A run of N jobs lasts well under a second, and one alone varied by a fifth from run to run:
  // the median of three, two before the worker's run and one after.
  const rawRate = percentile(rawRates, 0.5)
  say(`  raw BullMQ again: ${rawRates[2]?.toFixed(0)} jobs/s; median of three ${rawRate.toFixed(0)}`)

  say(`latency: creating ${N} shares with the worker running…`)
  received.length = 0
  worker = await startWorker(workerConfig)
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
    rawBullmqJobsPerSecond: Math.round(rawRate),
    rawBullmqRuns: rawRates.map((r) => Math.round(r)),
    deliveriesPerSecond: Math.round(deliveryRate),
    ratioToRawBullmq: Number((deliveryRate / rawRate).toFixed(2)),
    rawBullmqBulkJobsPerSecond: Math.round(rawBulkRate),
    ratioToRawBullmqBulk: Number((deliveryRate / rawBulkRate).toFixed(2)),
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
