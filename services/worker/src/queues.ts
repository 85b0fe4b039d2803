import { type JobName, jobIdOf, type JobPayloads, queueOf, webhookBatchMinimum, webhookBatchSize } from '@haven/schema'
import { type JobsOptions, Queue } from 'bullmq'
import { Redis } from 'ioredis'

export type Queues = ReturnType<typeof createQueues>

/** Messages per fan-out job: one relay batch of 200 becomes four jobs, added in one round trip. */
const fanoutChunk = 50

const jobOptions = (name: JobName, backoffScale: number) => ({
  attempts: queueOf[name].attempts,
  backoff: { type: 'exponential' as const, delay: queueOf[name].backoffMs * backoffScale, jitter: 0.5 },
  // A finished job is forgotten: the database records the work, and a deterministic id only has to
  // guard against doubles while the job is waiting, delayed or running. A failed one too: while
  // Redis held it, adding its id again added nothing, so work it left pending (its attempts spent
  // while PostgreSQL was down, or stalled twice) could not be handed over again by the relay or the
  // sweeper until it aged out, 7 days later. Failures are recorded in the database and logged.
  removeOnComplete: true,
  removeOnFail: true
})

/**
 * Producers for every queue, on a connection that fails fast while Redis is away (the callers keep
 * the work in the database and hand it over again later), never waiting on an offline queue.
 * `backoffScale` multiplies every retry delay (HAVEN_RETRY_DELAY_SCALE).
 */
export function createQueues (connection: Redis, prefix: string, backoffScale = 1) {
  const queues = new Map<string, Queue>()
  const queueFor = (name: JobName) => {
    const settings = queueOf[name]
    let queue = queues.get(settings.name)
    if (queue === undefined) {
      queue = new Queue(settings.name, { connection, prefix })
      // Connection errors are reported once, by the worker's watch on the producer connection.
      queue.on('error', () => {})
      queues.set(settings.name, queue)
    }
    return queue
  }
  return {
    /** Jobs with the queue's options, and any of a job's own (`opts`) on top. */
    async addBulk<N extends JobName> (name: N, jobs: { payload: JobPayloads[N], jobId: string, opts?: JobsOptions }[]): Promise<void> {
      if (jobs.length === 0) return
      await queueFor(name).addBulk(jobs.map((job) => ({ name, data: job.payload, opts: { ...jobOptions(name, backoffScale), ...job.opts, jobId: job.jobId } })))
    },
    async addFanout (outboxIds: string[]) {
      const chunks: string[][] = []
      for (let i = 0; i < outboxIds.length; i += fanoutChunk) chunks.push(outboxIds.slice(i, i + fanoutChunk))
      await this.addBulk('event.fanout', chunks.map((ids) => ({ payload: { outboxIds: ids }, jobId: jobIdOf['event.fanout']({ outboxIds: ids }) })))
    },
    async addEmails (emails: JobPayloads['email.send'][]) {
      await this.addBulk('email.send', emails.map((payload) => ({ payload, jobId: jobIdOf['email.send'](payload) })))
    },
    /** Fresh deliveries: in batches of first attempts per endpoint, fewer than `webhookBatchMinimum` left over as single jobs. */
    async addWebhookBatches (deliveries: { id: string, webhookId: string }[]) {
      const byEndpoint = new Map<string, string[]>()
      for (const d of deliveries) {
        const ids = byEndpoint.get(d.webhookId)
        if (ids === undefined) byEndpoint.set(d.webhookId, [d.id])
        else ids.push(d.id)
      }
      const batches: JobPayloads['webhook.deliverBatch'][] = []
      const singles: { id: string, generation: number, webhookId: string }[] = []
      for (const [webhookId, ids] of byEndpoint) {
        for (let i = 0; i < ids.length; i += webhookBatchSize) {
          const chunk = ids.slice(i, i + webhookBatchSize)
          if (chunk.length < webhookBatchMinimum) singles.push(...chunk.map((id) => ({ id, generation: 0, webhookId })))
          else batches.push({ webhookId, deliveryIds: chunk })
        }
      }
      await this.addBulk('webhook.deliverBatch', batches.map((payload) => ({ payload, jobId: jobIdOf['webhook.deliverBatch'](payload) })))
      await this.addWebhooks(singles)
    },
    async addWebhooks (deliveries: { id: string, generation: number, webhookId?: string }[]) {
      await this.addBulk('webhook.deliver', deliveries.map((d) => {
        // Stored as JSON: a webhookId left undefined is left out.
        const payload = { deliveryId: d.id, generation: d.generation, webhookId: d.webhookId }
        return { payload, jobId: jobIdOf['webhook.deliver'](payload) }
      }))
    },
    /**
     * Fresh deliveries whose first attempt (in a batch) failed: the rest of their attempts as single
     * jobs, on the schedule a single job would have had from the start (the first retry after about
     * one backoff, then twice that, and so on).
     */
    async retryWebhooks (webhookId: string, deliveryIds: string[]) {
      const { attempts } = queueOf['webhook.deliver']
      const backoffMs = queueOf['webhook.deliver'].backoffMs * backoffScale
      await this.addBulk('webhook.deliver', deliveryIds.map((id) => {
        const payload = { deliveryId: id, generation: 0, webhookId }
        return {
          payload,
          jobId: jobIdOf['webhook.deliver'](payload),
          opts: { attempts: attempts - 1, delay: Math.round(backoffMs * (0.5 + 0.5 * Math.random())), backoff: { type: 'exponential' as const, delay: 2 * backoffMs, jitter: 0.5 } }
        }
      }))
    },
    all: () => [...queues.values()],
    async depths () {
      const result: Record<string, number> = {}
      for (const name of Object.keys(queueOf) as JobName[]) {
        const counts = await queueFor(name).getJobCounts('waiting', 'active', 'delayed', 'prioritized')
        result[queueOf[name].name] = Object.values(counts).reduce((a, b) => a + b, 0)
      }
      return result
    },
    async close () {
      await Promise.all([...queues.values()].map(async (queue) => { await queue.close() }))
    }
  }
}

/**
 * Removes every queue under `prefix` (the worker's, or those named), jobs and bookkeeping keys
 * alike: for a run of its own (a benchmark, a test) on a Redis that others use. Never on a
 * deployment's prefix. Best effort: the Redis may be gone (one a test stopped), so one connection
 * try, every command bounded, and no error thrown.
 */
export async function removeQueues (redisUrl: string, prefix: string, names: string[] = Object.values(queueOf).map((queue) => queue.name)): Promise<void> {
  const connection = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 5000, retryStrategy: () => null })
  connection.on('error', () => {})
  try {
    await connection.connect()
    for (const name of names) {
      const queue = new Queue(name, { connection, prefix })
      queue.on('error', () => {})
      try {
        await queue.obliterate({ force: true })
      } finally {
        await queue.close()
      }
    }
  } catch {
    // Nothing more to remove from a Redis that is gone or does not answer.
  } finally {
    connection.disconnect()
  }
}
