/**
 * The worker's queues and jobs, in one typed map. Names are stored in Redis: never rename one without
 * draining its queue first. Payloads carry ids only — a processor re-reads what it needs, and does
 * nothing when the work is already done or the record is gone.
 */
import { createHash } from 'node:crypto'

export interface JobPayloads {
  /**
   * Outbox messages of one relay batch (up to 50 per job), to their recipients on every channel
   * (in-app rows are written here). One job for many messages, not one each: each message's own record (`processed_at`) is what
   * makes a re-run a no-op. Jobs queued before batches carried one `outboxId`; the worker still
   * takes those.
   */
  'event.fanout': { outboxIds: string[] }
  /** One email about one event to one agency's shared inbox. */
  'email.send': { eventId: string, agencyId: string }
  /**
   * First attempts of fresh deliveries (up to 16) to one webhook endpoint, made at once: how fan-out
   * hands deliveries over. A queue job per delivery cost more of the worker's CPU than the POST
   * itself (`pnpm bench:notifications`). A delivery whose first attempt fails goes on alone as a
   * `webhook.deliver` job; a batch run again tries only deliveries no attempt has reached.
   */
  'webhook.deliverBatch': { webhookId: string, deliveryIds: string[] }
  /**
   * One event to one webhook endpoint, for the generation of the delivery it was queued for (a
   * manual retry is the next): the first attempt where an endpoint has few deliveries or is slow,
   * the retries of a failed first attempt, re-dispatches and manual retries. Jobs queued before
   * generations were in the payload carry none, and act on any. `webhookId`, the endpoint's, lets
   * the worker hold the job back without running it while that endpoint has its share of the slots
   * (`webhookSinglesPerEndpoint`); jobs queued without it are not held back.
   */
  'webhook.deliver': { deliveryId: string, generation?: number, webhookId?: string }
}
export type JobName = keyof JobPayloads

export interface QueueSettings {
  name: string
  /** Attempts before a job is failed for good. */
  attempts: number
  /** First retry delay; doubled each attempt, with jitter (see the worker's backoff strategy). */
  backoffMs: number
  /** Jobs one worker process runs at once. */
  concurrency: number
}

export const queueOf: Record<JobName, QueueSettings> = {
  // Jobs of up to 50 messages: a few at a time finish one by one, so deliveries start while the
  // rest of a backlog is fanned out (eight at once on two cores all finished together, late).
  'event.fanout': { name: 'haven-events', attempts: 10, backoffMs: 1_000, concurrency: 4 },
  'email.send': { name: 'haven-email', attempts: 8, backoffMs: 5_000, concurrency: 4 },
  // About 1 s, 2 s, 4 s … 128 s between attempts: a delivery is given up on after about 4 minutes
  // (2 to 4, with the jitter).
  // A delivery mostly waits (on the receiver, and on the batched statements it shares with the
  // others), so 64 run at once; a receiver that hangs holds one slot for at most 10 s.
  'webhook.deliver': { name: 'haven-webhooks', attempts: 9, backoffMs: 1_000, concurrency: 64 },
  // A batch's POSTs run at once, and it holds its slot until the slowest ends (at most 10 s); an
  // endpoint already that slow gets single jobs instead (the worker's webhookBatchRunner). More
  // slots were slower: BullMQ takes a job for every free slot, one round trip each, before it
  // starts any (`pnpm bench:notifications`, same-minute runs against a one-run baseline: 64 slots
  // 0.64-0.77 of raw BullMQ, 8 slots 0.82-0.87).
  // Attempts here cover failures around the POSTs (the database, handing retries to Redis).
  'webhook.deliverBatch': { name: 'haven-webhook-batches', attempts: 10, backoffMs: 1_000, concurrency: 8 }
}

/** Deliveries per `webhook.deliverBatch` job, all to one endpoint: 8 × 16 first attempts at once at most. */
export const webhookBatchSize = 16
/**
 * Fewer fresh deliveries than this for one endpoint go as single jobs: a batch saves BullMQ's cost
 * per job, and many small batches would only hold fewer POSTs in flight (8 slots) than single jobs (64).
 */
export const webhookBatchMinimum = 4
/**
 * Slots one endpoint may hold in one worker process, of the batch queue's 8 and the single queue's
 * 64 (the worker's `endpointPace` and `singleSlots`): a receiver that hangs holds each for 10 s, and
 * an endpoint that has its share gets its next jobs held back (delayed, no attempt spent) so the
 * other agencies' deliveries keep slots of their own. An endpoint that has been answering quickly
 * gets more: every batch slot (not capped: a cap of 6 cost a quarter of one receiver's rate, the
 * held-back batches of its backlog waiting, `pnpm bench:notifications`) and 48 single ones. Endpoints that are slow share
 * `webhookSinglesForSlowEndpoints` between them.
 */
export const webhookBatchesPerEndpoint = 4
export const webhookSinglesPerEndpoint = 16
export const webhookSinglesPerQuickEndpoint = 48
export const webhookSinglesForSlowEndpoints = 32

/** The same ids in any order: the same key. */
const setKey = (ids: string[]) => createHash('sha256').update([...ids].sort().join(',')).digest('hex').slice(0, 32)

/**
 * Deterministic job ids: adding the same work twice (a relay re-run after a crash, a re-dispatch
 * after Redis lost its data) adds nothing while the first job exists.
 */
export const jobIdOf = {
  /** The same batch again (the relay re-run after a crash) is the same job. */
  'event.fanout': (p: JobPayloads['event.fanout']) => `events-${setKey(p.outboxIds)}`,
  'email.send': (p: JobPayloads['email.send']) => `email-${p.eventId}-${p.agencyId}`,
  'webhook.deliver': (p: JobPayloads['webhook.deliver']) => `webhook-${p.deliveryId}-${p.generation ?? 0}`,
  'webhook.deliverBatch': (p: JobPayloads['webhook.deliverBatch']) => `webhooks-${setKey(p.deliveryIds)}`
}
