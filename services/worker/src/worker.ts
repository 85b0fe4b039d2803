/**
 * The worker: the outbox relay, the queue processors (fan-out with in-app notifications, email,
 * webhooks), the reminder and expiry sweeper, the audit sealer, and metrics. Shutdown order: stop taking work (relay,
 * sweeper, queue workers — these finish their jobs in flight), then queues, Redis and the database.
 */
import { type Database, type JobName, type JobPayloads, openDatabase, queueOf } from '@haven/schema'
import { DelayedError, type Job, UnrecoverableError, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { createTransport } from 'nodemailer'
import { pino, type Logger } from 'pino'
import type { WorkerConfig } from './config.ts'
import { sendEmail } from './email.ts'
import { fanOut } from './fanout.ts'
import { startLoop } from './loop.ts'
import { createMetrics, serveMetrics } from './metrics.ts'
import { createQueues } from './queues.ts'
import { startRelay } from './relay.ts'
import { startSealer } from './sealer.ts'
import { expireShares, redispatchDeliveries, remindShares } from './sweeper.ts'
import { deliverWebhook, deliveryEnded, endpointPace, singleSlots, webhookBatchRunner, webhookStore } from './webhook.ts'
import { workInHand } from './work.ts'

export interface RunningWorker {
  log: Logger
  metricsPort: number | undefined
  close: () => Promise<void>
}

export interface WorkerOptions {
  database?: Database
  log?: Logger
  sweepEveryMs?: number
}

const isFinalAttempt = (job: Job) => job.attemptsMade + 1 >= (job.opts.attempts ?? 1)

/**
 * Puts a job back for `ms` to twice that, without running it and without spending an attempt, and
 * frees its slot: BullMQ's DelayedError.
 */
async function holdBack (job: Job, token: string | undefined, ms: number): Promise<never> {
  const lock = token ?? job.token
  // Without its lock's token BullMQ would move the job unchecked and leave the lock behind.
  if (lock === undefined) throw new Error('a job held back without its lock token')
  await job.moveToDelayed(Date.now() + ms * (1 + Math.random()), lock)
  throw new DelayedError()
}

/**
 * Starts the worker. With `database` given (root `pnpm start` shares its embedded database with the
 * API), the caller owns and closes it.
 */
export async function startWorker (config: WorkerConfig, options: WorkerOptions = {}): Promise<RunningWorker> {
  const log = options.log ?? pino({ name: 'haven-worker', level: config.logLevel })
  const database = options.database ?? await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, max: config.databaseConnections, applicationName: 'haven-worker' })
  // Producers fail fast while Redis is away (the work stays in the database); consumers wait for it.
  const producer = new Redis(config.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 5000, retryStrategy: (n) => Math.min(n * 500, 5000) })
  const consumer = new Redis(config.redisUrl, { maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(n * 500, 5000) })
  let redisDown = false
  producer.on('error', (error: Error & { code?: string }) => {
    if (!redisDown) log.warn({ code: error.code }, 'Redis is unreachable: notifications wait in the outbox until it is back')
    redisDown = true
  })
  producer.on('ready', () => {
    if (redisDown) log.info('Redis is reachable again')
    redisDown = false
  })
  consumer.on('error', () => {})

  const queues = createQueues(producer, config.queuePrefix, config.retryDelayScale)
  const metrics = createMetrics({ database, queues })
  const transport = config.smtpUrl !== undefined ? createTransport(config.smtpUrl) : undefined
  if (transport === undefined) log.info('SMTP_URL is not set: the email channel is off')

  const webhookDeps = {
    db: database.db,
    allowPrivate: config.webhookAllowPrivate,
    store: webhookStore(database.db),
    onDelivered: (ms: number) => { metrics.delivered('webhook', ms) },
    // One endpoint's share of the webhook queues' slots (jobs.ts, webhook.ts) depends on its pace: a
    // job beyond it is held back, for a moment, or for longer once the endpoint is slow.
    pace: endpointPace()
  }
  // The audit sealer gives way to notification work in hand (sealer.ts, `yieldTo`). On 2 cores, a
  // worker starting with a backlog of 1,000 shares used to seal their 2,000 audit events beside its
  // first fan-outs and deliveries, and delivered about a tenth slower (`pnpm bench:notifications`).
  const work = workInHand()
  const runBatch = webhookBatchRunner(webhookDeps, {
    handOver: {
      retry: async (webhookId, ids) => { await queues.retryWebhooks(webhookId, ids) },
      single: async (webhookId, ids) => { await queues.addWebhooks(ids.map((id) => ({ id, generation: 0, webhookId }))) }
    },
    onFailed: () => { metrics.failed('webhook') }
  })
  const slots = singleSlots(webhookDeps.pace)
  const consume = <N extends JobName>(name: N, handler: (payload: JobPayloads[N], job: Job, token?: string) => Promise<unknown>) =>
    new Worker(queueOf[name].name, async (job: Job, token?: string) => await work.track(async () => await handler(job.data as JobPayloads[N], job, token)), {
      connection: consumer,
      concurrency: queueOf[name].concurrency,
      prefix: config.queuePrefix,
      lockDuration: config.jobLockMs,
      stalledInterval: config.jobLockMs
    })
  const workers = [
    consume('event.fanout', async (payload) => {
      // A job queued before fan-out went by batches carries one `outboxId`.
      const legacy = (payload as { outboxId?: string }).outboxId
      const outboxIds = Array.isArray(payload.outboxIds) ? payload.outboxIds : legacy !== undefined ? [legacy] : []
      return await fanOut({ database, queues, emailEnabled: transport !== undefined }, outboxIds)
    }),
    // A worker that cannot send email takes no email job: it would complete it unsent, and the
    // sweeper would hand the pending row over again every 30 s. Left to a worker with SMTP_URL (a
    // fleet should have one setting; this one's fan-outs record no emails), or waiting in the queue.
    ...(transport === undefined ? [] : [consume('email.send', async (payload, job) => {
      try {
        if (await sendEmail({ db: database.db, transport, from: config.emailFrom, publicUrl: config.publicUrl }, payload, isFinalAttempt(job)) === 'sent') metrics.delivered('email')
      } catch (error) {
        metrics.failed('email')
        throw error
      }
    })]),
    consume('webhook.deliverBatch', async (payload, job, token) => {
      if (await runBatch(payload) === 'busy') await holdBack(job, token, 50)
    }),
    consume('webhook.deliver', async ({ deliveryId, generation, webhookId }, job, token) => {
      // Jobs queued without their endpoint are not held back.
      const taken = webhookId !== undefined ? slots.take(webhookId) : undefined
      if (taken !== undefined && 'holdMs' in taken) await holdBack(job, token, taken.holdMs)
      const slot = taken !== undefined && 'slot' in taken ? taken.slot : undefined
      try {
        await deliverWebhook(webhookDeps, deliveryId, { final: isFinalAttempt(job), generation })
      } catch (error) {
        metrics.failed('webhook')
        // Failed for good (the database counted its last attempt): no run of this job again.
        if (deliveryEnded(error)) throw new UnrecoverableError((error as Error).message)
        throw error
      } finally {
        if (slot !== undefined) slots.give(slot)
      }
    })
  ]
  for (const worker of workers) {
    worker.on('error', () => {})
    // Failed jobs are not kept in Redis (queues.ts): their last word is here. Ids and an error code
    // only; an error's message may quote a value.
    worker.on('failed', (job, error: Error & { code?: string }) => {
      if (job === undefined || job.attemptsMade < (job.opts.attempts ?? 1)) return
      log.warn({ queue: worker.name, job: job.id, attempts: job.attemptsMade, code: error.code ?? error.name }, 'a job failed at its last attempt; the database keeps its work, and hands over what is still pending again')
    })
  }

  const sealer = startSealer({ database, config, log, yieldTo: work.busy })
  const relay = await startRelay({ database, queues, log, redispatchAfterSeconds: config.redispatchAfterSeconds, onRelayed: work.done })
  const sweeper = startLoop({
    idleMs: options.sweepEveryMs ?? 5000,
    step: async () => {
      await expireShares(database)
      await remindShares(database)
      // Redis may be away; the rows stay pending and the next sweep tries again.
      await redispatchDeliveries(database, queues, config.redispatchAfterSeconds).catch(() => 0)
      return false
    },
    onError: (error) => { log.warn({ err: error }, 'sweep failed; trying again') }
  })
  const metricsServer = config.metricsPort !== 0 ? await serveMetrics(metrics, config.metricsPort) : undefined
  const address = metricsServer?.address()
  log.info({ database: database.kind, metricsPort: typeof address === 'object' ? address?.port : undefined }, 'worker started')

  return {
    log,
    metricsPort: typeof address === 'object' && address !== null ? address.port : undefined,
    close: async () => {
      await relay.stop()
      await sweeper.stop()
      await sealer.stop()
      await Promise.all(workers.map(async (worker) => { await worker.close() }))
      await queues.close()
      await new Promise<void>((resolve) => { if (metricsServer === undefined) resolve(); else metricsServer.close(() => { resolve() }) })
      producer.disconnect()
      consumer.disconnect()
      if (options.database === undefined) await database.close()
      log.info('worker stopped')
    }
  }
}
