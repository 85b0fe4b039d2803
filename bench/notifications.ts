/**
 * `pnpm bench:notifications`: commit-to-webhook latency and delivery throughput of the notification
 * worker, next to the raw BullMQ add-and-process rate on the same Redis, measured in the same run.
 *
 * 1. throughput, in BENCH_ROUNDS rounds (5, from 2 to 50): N shares created through the API while no
 *    worker runs, then a worker started on them (outbox → relay → fan-out job → delivery job →
 *    signed POST → recorded by a receiver in a process of its own, bench/receiver.ts, as a
 *    receiving agency's system is). Two rates: from the worker's start to the last webhook, which
 *    counts the worker's start (its connections, each new PostgreSQL backend's first statements,
 *    the pipeline filling: 135–335 ms here), and between the 10th and the 90th percentile of the
 *    webhooks' arrival, the rate while delivering. And the CPU a delivery took, by part: this
 *    process (the worker; the API idles), the receiver, the PostgreSQL backends, Redis, and the
 *    rest of the machine, and how many of the machine's cores were busy, next to the same for the
 *    raw run's jobs;
 * 2. baseline: in each round, beside the drain (before it in odd rounds, after it in even ones), N
 *    no-op jobs added one by one and processed by one BullMQ worker with our webhook queue's
 *    concurrency (a new queue, worker and connection), with its two rates measured the same way
 *    (from the first add to the last job processed; between the 10th and the 90th percentile of
 *    the jobs' completion). Round 1 holds each code's first run in this process (not yet
 *    compiled) and is reported apart; a single run varies by a fifth or more on these machines, so
 *    the summary is the median over rounds 2 on. Next to it, for reference, the same jobs added with
 *    addBulk (200 a round trip, as the worker adds its own): a stronger baseline, reported, not the
 *    target;
 * 3. latency: N shares created through the API at a steady pace with the worker running; for each
 *    webhook, receipt time minus the event's commit time (occurredAt).
 * Runs against a fresh database on the PostgreSQL at DATABASE_URL and the Redis at REDIS_URL.
 *
 * BENCH_WORKER chooses the worker: `inline` (the default), a new worker in this process each round
 * as above, under this process's heap settings (production's are the worker's start script's flags,
 * which NODE_OPTIONS can give the whole process); or `process`, the worker as production runs it:
 * its bundle (`pnpm build`) under its start script's flags, one process for the whole run, already
 * connected and warm after round 1, frozen (SIGSTOP) while each round's shares are made and thawed
 * (SIGCONT) at its window's start, frozen again once it has recorded its drain (so it idles beside
 * no raw run). Its rate "from the start" then runs from the thaw, and its CPU is that process's
 * (this process's then goes to "rest").
 */
import { fork } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildApp, connectRedis, loadConfig, loadSigningKeys } from '@haven/api'
import { agencies, openDatabase, queueOf, sql, users } from '@haven/schema'
import { loadWorkerConfig, removeQueues, startWorker } from '@haven/worker'
import { Queue, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { hash } from '@node-rs/argon2'
import { backendCpuSampler, cpuSecondsOf, createDatabase, freePort, machineCpuSeconds, percentile, redisUrl, round, say, startScript, startService, waitUntilUp } from './harness.ts'
import type { ReceiverMessage, ReceiverRequest } from './receiver.ts'

const N = Number(process.env.BENCH_SHARES ?? 1000)
if (!Number.isInteger(N) || N < 10) throw new Error('BENCH_SHARES must be a whole number of 10 or more')
const concurrency = 8
// Round 1 is reported apart; the summary needs one round after it at least, and an odd count has as
// many rounds after it with the raw run first as second.
const roundCount = Number(process.env.BENCH_ROUNDS ?? 5)
if (!Number.isInteger(roundCount) || roundCount < 2 || roundCount > 50) throw new Error('BENCH_ROUNDS must be a whole number from 2 to 50')
const workerMode = process.env.BENCH_WORKER ?? 'inline'
if (workerMode !== 'inline' && workerMode !== 'process') throw new Error('BENCH_WORKER must be inline or process')
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length / 2
  return Number.isInteger(middle) ? ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2 : sorted[Math.floor(middle)] ?? 0
}
/** Items per second between the 10th and the 90th percentile of their completion times (ms), the same for both sides. */
const trimmedRate = (times: number[]) => {
  const sorted = [...times].sort((a, b) => a - b)
  const from = Math.floor(0.1 * (sorted.length - 1))
  const to = Math.ceil(0.9 * (sorted.length - 1))
  return (to - from) / (((sorted[to] ?? 0) - (sorted[from] ?? 0)) / 1000)
}

/** CPU seconds a run used, by part (see `cpuBetween` in main), and the machine's cores busy on average. */
interface Cpu { node: number, receiver: number, postgres: number, redis: number, rest: number, busyCores: number }
const cpuParts = ['node', 'receiver', 'postgres', 'redis', 'rest'] as const
/** Milliseconds of CPU an item (a delivery, a job), by part and in all. */
const perItem = (cpu: Cpu) => {
  const ms = Object.fromEntries(cpuParts.map((part) => [part, round(cpu[part] * 1000 / N, 3)])) as Record<typeof cpuParts[number], number>
  return { ...ms, total: round(cpuParts.reduce((sum, part) => sum + cpu[part] * 1000 / N, 0), 3), busyCores: round(cpu.busyCores) }
}
const medianCpu = (items: ReturnType<typeof perItem>[]) =>
  Object.fromEntries([...cpuParts, 'total' as const, 'busyCores' as const].map((part) => [part, round(median(items.map((item) => item[part])), 3)]))
const describeCpu = (ms: ReturnType<typeof perItem>, node = 'this process') =>
  `${ms.total.toFixed(2)} ms (${node} ${ms.node.toFixed(2)}, receiver ${ms.receiver.toFixed(2)}, PostgreSQL ${ms.postgres.toFixed(2)}, Redis ${ms.redis.toFixed(2)}, rest ${ms.rest.toFixed(2)}; ${ms.busyCores.toFixed(2)} of ${availableParallelism()} cores busy)`

/** The pid of the Redis at REDIS_URL when it runs on this machine (its CPU is then counted), else 0. */
async function localRedisPid (): Promise<number> {
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(new URL(redisUrl).hostname)) return 0
  const probe = new Redis(redisUrl, { maxRetriesPerRequest: 1 })
  try {
    return Number(/process_id:(\d+)/.exec(await probe.info('server'))?.[1] ?? 0)
  } finally {
    probe.disconnect()
  }
}

/** Jobs per second from the first add to the last job processed, and between the 10th and 90th percentile of their completion. */
async function rawBullmq (bulk: boolean, atLastJob = () => {}): Promise<{ rate: number, steadyRate: number }> {
  checkInterrupted()
  const prefix = `bench-${randomUUID().slice(0, 8)}`
  const removeQueue = undoLater(async () => { await removeQueues(redisUrl, prefix, ['raw']) })
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null })
  const queue = new Queue('raw', { connection, prefix })
  const completed: number[] = []
  let allDone = () => {}
  const finished = new Promise<void>((resolve) => { allDone = resolve })
  const worker = new Worker('raw', async () => {
    completed.push(performance.now())
    if (completed.length === N) allDone()
  }, { connection, prefix, concurrency: queueOf['webhook.deliver'].concurrency })
  worker.on('error', () => {})
  const started = performance.now()
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`raw BullMQ: ${completed.length} of ${N} jobs in 2 minutes`)) }, 120_000) })
  try {
    await Promise.race([deadline, interruption, (async () => {
      if (bulk) {
        for (let i = 0; i < N; i += 200) {
          await queue.addBulk(Array.from({ length: Math.min(200, N - i) }, (_, k) => ({ name: 'noop', data: { i: i + k }, opts: { jobId: `raw-${i + k}`, removeOnComplete: true } })))
        }
      } else {
        for (let i = 0; i < N; i++) await queue.add('noop', { i }, { jobId: `raw-${i}`, removeOnComplete: true })
      }
      await finished
      atLastJob()
    })()])
  } catch (error) {
    // Redis may be away, and its commands would wait for it forever: give up on them (the clean-up
    // removes the queue if it can).
    connection.disconnect()
    throw error
  } finally {
    clearTimeout(timer)
  }
  await worker.close()
  await queue.obliterate({ force: true })
  await queue.close()
  connection.disconnect()
  removeQueue.cancel()
  return { rate: N / ((Math.max(...completed) - started) / 1000), steadyRate: trimmedRate(completed) }
}

/** Undone in reverse order at the end, whether the bench finished, failed or was interrupted (the machine's services are shared). */
const cleanup: (() => unknown)[] = []
/** Adds `undo` to the clean-up; `cancel()` takes it off again once its work is undone otherwise. */
function undoLater (undo: () => unknown) {
  cleanup.push(undo)
  return {
    cancel: () => {
      const at = cleanup.indexOf(undo)
      if (at >= 0) cleanup.splice(at, 1)
    }
  }
}

class Interrupted extends Error {}
/**
 * Ctrl-C (SIGINT) or SIGTERM: the bench stops at its next step (a share made, a wait) and undoes
 * what it made, as after a failure. One Ctrl-C can reach this process more than once (from the
 * terminal, and relayed by pnpm); a signal a second or more after the first quits at once, clean-up
 * or not. The script runs under `node --import tsx`, not the tsx command, which answers a Ctrl-C
 * that its child does not acknowledge within 60 ms with SIGKILL: a bench busy on 2 cores missed
 * that, and died before it could clean up.
 */
let interruptedBy: NodeJS.Signals | undefined
let interruptedAt = 0
let interrupt = () => {}
const interruption = new Promise<never>((_resolve, reject) => { interrupt = () => { reject(new Interrupted(`${interruptedBy} received`)) } })
interruption.catch(() => {})
const exitCodeOf = (signal: NodeJS.Signals) => signal === 'SIGINT' ? 130 : 143
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interruptedBy === undefined) {
      interruptedBy = signal
      interruptedAt = Date.now()
      say(`${signal}: stopping, and cleaning up (send it again to quit at once)…`)
      interrupt()
    } else if (Date.now() - interruptedAt > 1000) {
      say(`${signal}: quitting without cleaning up`)
      process.exit(exitCodeOf(signal))
    }
  })
}
const checkInterrupted = () => { if (interruptedBy !== undefined) throw new Interrupted(`${interruptedBy} received`) }

async function main () {
  const bench = await createDatabase('haven_bench')
  cleanup.push(bench.drop)
  const databaseUrl = bench.url
  const database = await openDatabase({ url: databaseUrl, max: 10 })
  cleanup.push(async () => { await database.close() })
  await database.migrate()

  const receiver = fork(new URL('receiver.ts', import.meta.url).pathname, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  // It ignores signals (see receiver.ts) and ends when its IPC channel closes.
  cleanup.push(() => { if (receiver.connected) receiver.disconnect() })
  const gone = new Promise<never>((_resolve, reject) => { receiver.once('exit', (code) => { reject(new Error(`the receiver exited (${code})`)) }) })
  gone.catch(() => {})
  /** The receiver's next message, after sending it `request`; one exchange at a time. */
  const fromReceiver = async (request?: ReceiverRequest) => await Promise.race([gone, new Promise<ReceiverMessage>((resolve, reject) => {
    receiver.once('message', resolve)
    if (request === undefined) return
    if (!receiver.connected) reject(new Error('the receiver is gone'))
    else receiver.send(request, (error) => { if (error !== null) reject(error) })
  })])
  const ready = await fromReceiver()
  if (!('port' in ready)) throw new Error('the receiver did not start')
  const hookUrl = `http://127.0.0.1:${ready.port}/hooks`
  /** The webhooks received since the last call, with their arrival and commit times. */
  const takeDeliveries = async () => {
    const answer = await fromReceiver('take')
    return 'received' in answer ? answer.received : []
  }

  const dataDir = mkdtempSync(join(tmpdir(), 'haven-bench-'))
  cleanup.push(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const env = { NODE_ENV: 'test', DATABASE_URL: databaseUrl, REDIS_URL: redisUrl, HAVEN_DATA_DIR: dataDir, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true', LOG_LEVEL: 'warn' }
  const config = loadConfig({ ...env, HAVEN_RATE_LIMIT_USER_PER_MIN: '1000000', HAVEN_RATE_LIMIT_IP_PER_MIN: '1000000' })
  const keys = loadSigningKeys(config)
  const redis = connectRedis(redisUrl)
  cleanup.push(() => { redis.disconnect() })
  const app = await buildApp({ config, database, redis, keys })
  cleanup.push(async () => {
    // Interrupted, the bench's own keep-alive connections may be busy: close() alone would wait out
    // their keep-alive timeout.
    const closing = app.close()
    app.server.closeAllConnections()
    await closing
  })
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
        checkInterrupted()
        next++
        const referral = await call(referrer, 'POST', '/v1/referrals', body)
        await call(referrer, 'POST', `/v1/referrals/${referral.id}/shares`, { agencyId: ngo.id })
      }
    }))
  }
  const workerConfig = loadWorkerConfig({ ...env, HAVEN_METRICS_PORT: '0', HAVEN_QUEUE_PREFIX: `bench-${Date.now()}` })
  // The worker's queues under this run's prefix, which would otherwise stay in Redis.
  cleanup.push(async () => { await removeQueues(redisUrl, workerConfig.queuePrefix) })
  /** BENCH_WORKER=process: the worker's own process, up (its metrics answer) and idle. */
  const workerProcess = workerMode === 'process'
    ? await (async () => {
      const metricsPort = await freePort()
      const service = startService('worker', 'services/worker', { ...env, HAVEN_METRICS_PORT: String(metricsPort), HAVEN_QUEUE_PREFIX: workerConfig.queuePrefix }, dataDir)
      cleanup.push(async () => {
        service.child.kill('SIGCONT')
        await service.stop()
      })
      await waitUntilUp(service, `http://127.0.0.1:${metricsPort}/metrics`)
      return service
    })()
    : undefined
  /** Rejects, with what it wrote last, if the worker's process exits during the run. */
  const workerExited = new Promise<never>((_resolve, reject) => {
    workerProcess?.child.once('exit', (code, signal) => { reject(new Error(`the worker exited (${code ?? signal}):\n${workerProcess.output()}`)) })
  })
  workerExited.catch(() => {})
  /**
   * Process mode: freezes the worker once it has recorded everything (no pending delivery, no
   * unprocessed message; at most 10 s), so that nothing of a drain runs on beside the next raw run
   * or the next round's shares, and nothing is in flight across the freeze.
   */
  const freezeWorker = async () => {
    if (workerProcess === undefined) return
    for (const until = Date.now() + 10_000; Date.now() < until;) {
      const [busy] = await database.rows<{ n: string }>(sql`
        select (select count(*) from webhook_deliveries where status = 'pending') + (select count(*) from outbox where processed_at is null) as n`)
      if (Number(busy?.n) === 0) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    workerProcess.child.kill('SIGSTOP')
  }
  /**
   * Resolves once `count` events' webhooks have arrived since the last take (the receiver answers
   * then; it counts an event once). A wait given up (deadline, interruption) ends the bench: its
   * answer would otherwise be taken for the next exchange's.
   */
  const waitForDeliveries = async (count: number) => {
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`fewer than ${count} webhooks arrived in 2 minutes`)) }, 120_000) })
    try {
      await Promise.race([deadline, interruption, workerExited, fromReceiver({ waitFor: count })])
    } finally {
      clearTimeout(timer)
    }
  }

  // The CPU each side's run used, in seconds, by part: this process (the worker, or the raw run's
  // adds and worker; the API idles; in process mode the worker's process instead, for a drain), the receiver, the PostgreSQL backends of the bench database
  // (the worker's, opened for the drain), Redis (when it runs on this machine), and the rest of the
  // machine: the kernel's work charged to no process, PostgreSQL's background processes (the WAL
  // writer), anything else running here.
  const redisPid = await localRedisPid()
  const cpuNow = () => ({
    at: performance.now(), machine: machineCpuSeconds(), node: process.cpuUsage(), worker: cpuSecondsOf(workerProcess?.pid ?? 0), receiver: cpuSecondsOf(receiver.pid ?? 0), redis: cpuSecondsOf(redisPid)
  })
  /** `node`: this process's CPU, or with `ofWorkerProcess` the worker process's. */
  const cpuBetween = (before: ReturnType<typeof cpuNow>, after: ReturnType<typeof cpuNow>, postgres = 0, ofWorkerProcess = false): Cpu => {
    const node = ofWorkerProcess ? after.worker - before.worker : (after.node.user - before.node.user + after.node.system - before.node.system) / 1e6
    const part = { node, receiver: after.receiver - before.receiver, postgres, redis: after.redis - before.redis }
    const machine = after.machine - before.machine
    return { ...part, rest: Math.max(0, machine - part.node - part.receiver - part.postgres - part.redis), busyCores: machine / ((after.at - before.at) / 1000) }
  }

  /**
   * A worker started on the backlog; its rate from its start to the last webhook received, and
   * between the 10th and the 90th percentile of their arrival; the CPU it took.
   */
  const drain = async () => {
    checkInterrupted()
    const backends = backendCpuSampler(bench)
    await backends.start()
    const cpuBefore = cpuNow()
    const started = Date.now()
    workerProcess?.child.kill('SIGCONT')
    const worker = workerProcess === undefined ? await startWorker(workerConfig) : undefined
    let cpu: Cpu
    try {
      await waitForDeliveries(N)
      const cpuAfter = cpuNow()
      // Its backends, before they close with it (a few milliseconds after the window).
      await backends.sample()
      cpu = cpuBetween(cpuBefore, cpuAfter, backends.total(), workerProcess !== undefined)
    } finally {
      await worker?.close()
    }
    await freezeWorker()
    const times = (await takeDeliveries()).map((r) => r.at)
    return { rate: N / ((Math.max(...times) - started) / 1000), steadyRate: trimmedRate(times), firstMs: Math.min(...times) - started, cpu }
  }
  const rawRun = async () => {
    const cpuBefore = cpuNow()
    let cpuAfter = cpuBefore
    const raw = await rawBullmq(false, () => { cpuAfter = cpuNow() })
    return { ...raw, cpu: cpuBetween(cpuBefore, cpuAfter) }
  }
  // Round by round, a raw run beside each drain, first in odd rounds and second in even ones: the
  // one right after the API's 2N requests may meet their garbage, and the first warms code the
  // other uses too (BullMQ, ioredis).
  const rounds = []
  for (let number = 1; number <= roundCount; number++) {
    checkInterrupted()
    say(`round ${number}: ${N} shares created with no worker running; a raw BullMQ run and a worker started on the shares, in turn…`)
    // Round 1's worker has just started; later ones were frozen at the end of their drain.
    await freezeWorker()
    await createShares(N)
    const rawFirst = number % 2 === 1
    const rawBefore = rawFirst ? await rawRun() : undefined
    const drained = await drain()
    const raw = rawBefore ?? await rawRun()
    const ratio = drained.rate / raw.rate
    const steadyRatio = drained.steadyRate / raw.steadyRate
    rounds.push({
      deliveriesPerSecond: Math.round(drained.rate),
      rawBullmqJobsPerSecond: Math.round(raw.rate),
      ratio: round(ratio),
      firstDeliveryMs: drained.firstMs,
      steadyDeliveriesPerSecond: Math.round(drained.steadyRate),
      rawBullmqSteadyJobsPerSecond: Math.round(raw.steadyRate),
      steadyRatio: round(steadyRatio),
      cpuMsPerDelivery: perItem(drained.cpu),
      cpuMsPerRawJob: perItem(raw.cpu)
    })
    say(`  from the worker's ${workerProcess === undefined ? 'start' : 'thaw'} ${drained.rate.toFixed(0)} deliveries/s (first at ${drained.firstMs} ms), raw BullMQ ${raw.rate.toFixed(0)} jobs/s: ${ratio.toFixed(2)}; 10th to 90th percentile ${drained.steadyRate.toFixed(0)}/s against ${raw.steadyRate.toFixed(0)}/s: ${steadyRatio.toFixed(2)}`)
    say(`  CPU a delivery ${describeCpu(perItem(drained.cpu), workerProcess === undefined ? 'this process' : 'the worker\'s process')}; a raw job ${describeCpu(perItem(raw.cpu))}`)
  }
  const warm = rounds.slice(1)
  const rawBulk = await rawBullmq(true)

  checkInterrupted()
  say(`latency: creating ${N} shares with the worker running…`)
  const [phase] = await database.rows<{ started: string }>(sql`select now()::text as started`)
  workerProcess?.child.kill('SIGCONT')
  const worker = workerProcess === undefined ? await startWorker(workerConfig) : undefined
  const apiStarted = performance.now()
  let apiRate: number
  try {
    await createShares(N)
    apiRate = (2 * N) / ((performance.now() - apiStarted) / 1000)
    await waitForDeliveries(N)
  } finally {
    await worker?.close()
  }
  const latencies = (await takeDeliveries()).map((r) => r.at - r.occurredAt)
  const enqueue = await database.rows<{ ms: number }>(sql`
    select (extract(epoch from relayed_at - created_at) * 1000)::float8 as ms from outbox
    where type = 'share.created' and created_at > ${phase?.started}::timestamptz`)
  const enqueueMs = enqueue.map((row) => Number(row.ms))

  const results = {
    when: new Date().toISOString(),
    shares: N,
    worker: workerMode === 'process' ? { mode: workerMode, nodeFlags: startScript('services/worker').flags } : { mode: workerMode, nodeOptions: process.env.NODE_OPTIONS ?? '' },
    rounds,
    firstRoundRatioToRawBullmq: rounds[0]?.ratio,
    firstRoundSteadyRatioToRawBullmq: rounds[0]?.steadyRatio,
    warmRatioToRawBullmq: round(median(warm.map((r) => r.ratio))),
    warmSteadyRatioToRawBullmq: round(median(warm.map((r) => r.steadyRatio))),
    warmCpuMsPerDelivery: medianCpu(warm.map((r) => r.cpuMsPerDelivery)),
    warmCpuMsPerRawJob: medianCpu(warm.map((r) => r.cpuMsPerRawJob)),
    rawBullmqBulkJobsPerSecond: Math.round(rawBulk.rate),
    commitToEnqueueMs: { p50: Math.round(percentile(enqueueMs, 0.5)), p99: Math.round(percentile(enqueueMs, 0.99)) },
    commitToWebhookMs: { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), max: Math.max(...latencies) },
    apiRequestsPerSecondWhileDelivering: Math.round(apiRate)
  }
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`)
  mkdirSync(new URL('results/', import.meta.url), { recursive: true })
  writeFileSync(new URL(`results/notifications-${Date.now()}.json`, import.meta.url), JSON.stringify(results, null, 2))
}

try {
  await main()
} catch (error) {
  // Interrupted, what fails next is the bench being stopped (a wait given up, say), not a fault.
  if (interruptedBy === undefined) throw error
} finally {
  for (const undo of cleanup.reverse()) {
    try {
      await undo()
    } catch (error) {
      say(`cleanup: ${String(error)}`)
    }
  }
}
// Interrupted, a raw run's worker may still hold the process open: it is done with.
if (interruptedBy !== undefined) process.exit(exitCodeOf(interruptedBy))
