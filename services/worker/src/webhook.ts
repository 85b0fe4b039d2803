/**
 * Webhook delivery: POST the event to the endpoint, signed
 * `Haven-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, with the event id
 * in `Haven-Event-Id` for the receiver to dedupe on. 10 s for the whole exchange, no redirects; the
 * URL is checked again, and a host name's address is checked to be public on the very connection
 * (unless HAVEN_WEBHOOK_ALLOW_PRIVATE). A non-2xx answer or a timeout is a failed attempt: the
 * queue retries with backoff (a batch's first attempt hands the delivery to a retry job of its own);
 * the last failure marks the delivery failed, and an endpoint whose deliveries fail this often in a
 * row is switched off.
 */
import { createHmac } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { type Db, type OutboxType, publicOnlyLookup, queueOf, rowsOf, type Urgency, uuidPattern, webhookBatchesPerEndpoint, webhookDeliveries, webhookSinglesForSlowEndpoints, webhookSinglesPerEndpoint, webhookSinglesPerQuickEndpoint, webhooks, webhookUrlProblem } from '@haven/schema'
import { and, eq, isNull, sql } from 'drizzle-orm'
import { batched } from './batch.ts'
import { notifyWebhookDisabled } from './fanout.ts'
import { webhookBody } from './messages.ts'

export const webhookTimeoutMs = 10_000
/** Failed deliveries in a row (each after all its retries) before an endpoint is switched off. */
export const maxConsecutiveFailures = 5

export function signatureHeader (secret: string, rawBody: string, now = Date.now()) {
  const t = Math.floor(now / 1000)
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${rawBody}`).digest('hex')}`
}

class DeliveryError extends Error {
  /** The failure made the delivery failed for good. */
  ended = false
  constructor (message: string, readonly statusCode: number | null) { super(message) }
}

/** Whether an error from `deliverWebhook` ended the delivery: its job must not run again. */
export const deliveryEnded = (error: unknown): boolean => error instanceof DeliveryError && error.ended

/** One POST; resolves with the status code of a 2xx answer, rejects otherwise. */
async function post (url: string, headers: Record<string, string>, body: string, allowPrivate: boolean): Promise<number> {
  const target = new URL(url)
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest
  return await new Promise((resolve, reject) => {
    const request = send(target, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'Haven-Webhooks/1' },
      lookup: publicOnlyLookup(allowPrivate) as never,
      timeout: webhookTimeoutMs
    }, (response) => {
      response.resume()
      const status = response.statusCode ?? 0
      response.on('end', () => {
        if (status >= 200 && status < 300) resolve(status)
        else reject(new DeliveryError(status >= 300 && status < 400 ? `redirect ${status} not followed` : `HTTP ${status}`, status))
      })
      response.on('error', (error) => { reject(new DeliveryError(error.message, status)) })
    })
    // `timeout` is per idle socket; the deadline bounds the whole exchange (a receiver trickling bytes).
    const deadline = setTimeout(() => { request.destroy(new DeliveryError(`no answer within ${webhookTimeoutMs / 1000} s`, null)) }, webhookTimeoutMs)
    request.on('close', () => { clearTimeout(deadline) })
    request.on('timeout', () => { request.destroy(new DeliveryError(`no answer within ${webhookTimeoutMs / 1000} s`, null)) })
    request.on('error', (error: NodeJS.ErrnoException) => {
      reject(error instanceof DeliveryError ? error : new DeliveryError(error.code === 'EHAVENPRIVATE' ? 'the host resolves to a non-public address' : (error.code ?? 'connection failed'), null))
    })
    request.end(body)
  })
}

/** What one delivery needs, read in one statement with the other deliveries starting at the same time. */
interface DeliveryRow {
  id: string
  status: string
  attempts: number
  generation: number
  event_id: string
  type: OutboxType
  webhook_id: string
  agency_id: string
  url: string
  secret: string
  webhook_active: boolean
  /** Milliseconds since the epoch: raw rows carry timestamps as text under drizzle's drivers. */
  occurred_ms: number | null
  referral_id: string | null
  share_id: string | null
  event_agency_id: string | null
  reference: string | null
  urgency: Urgency | null
}

/**
 * The reads and writes of deliveries, batched across the jobs that run at once (see batch.ts):
 * per delivery they were two statements of their own, built by drizzle, which took more of the
 * worker's CPU than the POST itself (`pnpm bench:notifications`, CPU profile). Failures stay one
 * transaction each: they are rare, and they may switch an endpoint off.
 */
export function webhookStore (db: Db) {
  const load = batched<string, DeliveryRow | undefined>(async (ids) => {
    // One malformed id would fail the statement for every delivery batched with it: such a job finds
    // nothing, as a job whose delivery is gone does.
    const wellFormed = ids.filter((id) => uuidPattern.test(id))
    if (wellFormed.length === 0) return ids.map(() => undefined)
    const rows = await rowsOf<DeliveryRow>(db, sql`
      select d.id::text, d.status, d.attempts, d.generation, d.event_id::text, d.type, w.id::text as webhook_id, w.agency_id::text, w.url, w.secret,
        (w.status = 'active' and w.deleted_at is null) as webhook_active,
        (extract(epoch from o.created_at) * 1000)::float8 as occurred_ms, o.payload->>'referralId' as referral_id, o.payload->>'shareId' as share_id, o.payload->>'agencyId' as event_agency_id,
        r.reference, r.urgency
      from webhook_deliveries d
      join webhooks w on w.id = d.webhook_id
      left join outbox o on o.id = d.event_id
      left join referrals r on r.id = (o.payload->>'referralId')::uuid
      where d.id = any(${`{${wellFormed.join(',')}}`}::uuid[])`)
    const byId = new Map(rows.map((row) => [row.id, row]))
    return ids.map((id) => byId.get(id.toLowerCase()))
  })
  const markDelivered = batched<{ id: string, statusCode: number }, void>(async (delivered) => {
    await db.execute(sql`
      with delivered as (
        update webhook_deliveries d set status = 'delivered', attempts = d.attempts + 1, last_status_code = v.status_code, last_error = null,
          last_attempt_at = now(), delivered_at = now()
        from unnest(${`{${delivered.map((d) => d.id).join(',')}}`}::uuid[], ${`{${delivered.map((d) => d.statusCode).join(',')}}`}::int[]) as v(id, status_code)
        where d.id = v.id
        returning d.webhook_id
      )
      update webhooks set consecutive_failures = 0 where id in (select webhook_id from delivered) and consecutive_failures <> 0`)
    return delivered.map(() => undefined)
  })
  return { load, markDelivered }
}
export type WebhookStore = ReturnType<typeof webhookStore>

export interface WebhookDeps {
  db: Db
  allowPrivate: boolean
  store: WebhookStore
  onDelivered?: (latencyMs: number) => void
  /** Told how long each POST took, answered or not: how the endpoint has been answering. */
  pace?: EndpointPace
}

/** Attempts a delivery gets in all, whichever jobs make them: the database counts them. */
const maxAttempts = queueOf['webhook.deliver'].attempts

/** What a job knows of the attempt it makes. */
export interface Attempt {
  /** The job's own last attempt (the database may make an earlier one the last). */
  final?: boolean
  /** The generation the job was queued for: after a manual retry, an older job does nothing. */
  generation?: number
  /** A batch's first attempt: only a delivery never attempted. */
  freshOnly?: boolean
}

/**
 * One attempt at one delivery. It is the last when the job says so, or when it brings the
 * delivery's count to its attempts in all: a delivery can change jobs (a batch's first attempt,
 * its retry job, a re-dispatch after Redis lost them), and the database's count, decided in the
 * statement that records the failure, holds across them and across two runs at once.
 * With `freshOnly` it answers 'attempted' for a delivery still pending after an attempt, whose retry
 * job the caller queues again (the job id makes that a no-op if it exists).
 */
export async function deliverWebhook (deps: WebhookDeps, deliveryId: string, attempt: Attempt = {}): Promise<'delivered' | 'skipped' | 'attempted'> {
  // One read: the delivery, its endpoint, and the facts of its event.
  const row = await deps.store.load(deliveryId)
  if (row === undefined || row.status !== 'pending' || (attempt.generation !== undefined && row.generation !== attempt.generation)) return 'skipped'
  if (attempt.freshOnly === true && row.attempts > 0) return 'attempted'
  const facts = row.occurred_ms === null || row.referral_id === null || row.event_agency_id === null || row.reference === null || row.urgency === null
    ? undefined
    : { eventId: row.event_id, type: row.type, occurredAt: new Date(row.occurred_ms), referralId: row.referral_id, reference: row.reference, urgency: row.urgency, shareId: row.share_id, agencyId: row.event_agency_id }
  // A failure is recorded against the generation loaded, still pending: a manual retry meanwhile
  // starts afresh and keeps every attempt (a success is recorded whatever the generation).
  const stillThisAttempt = and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.status, 'pending'), eq(webhookDeliveries.generation, row.generation))
  if (!row.webhook_active || facts === undefined) {
    await deps.db.update(webhookDeliveries).set({ status: 'failed', lastError: facts === undefined ? 'the event is gone' : 'the endpoint is disabled or deleted' }).where(stillThisAttempt)
    return 'skipped'
  }
  const webhook = { id: row.webhook_id, agencyId: row.agency_id, url: row.url, secret: row.secret }
  // The URL again: an IP literal never reaches the lookup hook, and the endpoint was checked under
  // the settings of the day it was registered.
  // A refused URL is a failed attempt like any other: it counts towards switching the endpoint off.
  const urlProblem = webhookUrlProblem(webhook.url, deps.allowPrivate)
  const body = JSON.stringify(webhookBody(facts))
  try {
    if (urlProblem !== null) throw new DeliveryError(`the URL ${urlProblem}`, null)
    const sent = Date.now()
    const status = await post(webhook.url, { 'haven-event-id': facts.eventId, 'haven-signature': signatureHeader(webhook.secret, body) }, body, deps.allowPrivate)
      .finally(() => { deps.pace?.ended(webhook.id, sent) })
    await deps.store.markDelivered({ id: deliveryId, statusCode: status })
    deps.onDelivered?.(Date.now() - facts.occurredAt.getTime())
    return 'delivered'
  } catch (error) {
    const failure = error instanceof DeliveryError ? error : new DeliveryError('delivery failed', null)
    failure.ended = await deps.db.transaction(async (tx) => {
      const [recorded] = await tx.update(webhookDeliveries).set({
        attempts: sql`${webhookDeliveries.attempts} + 1`, lastStatusCode: failure.statusCode, lastError: failure.message, lastAttemptAt: sql`now()`,
        status: sql`case when ${attempt.final === true} or ${webhookDeliveries.attempts} + 1 >= ${maxAttempts} then 'failed' else ${webhookDeliveries.status} end`
      }).where(stillThisAttempt).returning({ status: webhookDeliveries.status })
      if (recorded?.status !== 'failed') return false
      const [updated] = await tx.update(webhooks).set({ consecutiveFailures: sql`${webhooks.consecutiveFailures} + 1` })
        .where(eq(webhooks.id, webhook.id)).returning({ failures: webhooks.consecutiveFailures })
      if ((updated?.failures ?? 0) >= maxConsecutiveFailures) {
        // Its admins are told when this switches it off; a failure that ends after that (a POST
        // that was in flight) tells nobody again.
        const switchedOff = await tx.update(webhooks).set({ status: 'disabled' })
          .where(and(eq(webhooks.id, webhook.id), eq(webhooks.status, 'active'), isNull(webhooks.deletedAt))).returning({ id: webhooks.id })
        if (switchedOff.length > 0) await notifyWebhookDisabled(tx, webhook.agencyId)
      }
      return true
    })
    throw failure
  }
}

/** Where a batch's deliveries go on as single `webhook.deliver` jobs. */
export interface BatchHandOver {
  /** Deliveries whose first attempt failed: the rest of their attempts. */
  retry: (webhookId: string, deliveryIds: string[]) => Promise<void>
  /** Deliveries not yet attempted, for an endpoint that is slow to answer. */
  single: (webhookId: string, deliveryIds: string[]) => Promise<void>
}

/**
 * How each endpoint has been answering, in this process: slow for `forMs` after a POST to it took
 * `slowAfterMs` or more, quick for `forMs` after one took less and none since was slow.
 */
export function endpointPace (slowAfterMs = 1000, forMs = 60_000) {
  const slowUntil = new Map<string, number>()
  const quickUntil = new Map<string, number>()
  const slow = (webhookId: string, now = Date.now()) => (slowUntil.get(webhookId) ?? 0) > now
  return {
    slowAfterMs,
    /** A POST to the endpoint that started at `startedAt` has ended, answered or not. */
    ended (webhookId: string, startedAt: number, now = Date.now()) {
      if (now - startedAt >= slowAfterMs) {
        slowUntil.set(webhookId, now + forMs)
        quickUntil.delete(webhookId)
      } else {
        quickUntil.set(webhookId, now + forMs)
      }
    },
    slow,
    quick: (webhookId: string, now = Date.now()) => !slow(webhookId, now) && (quickUntil.get(webhookId) ?? 0) > now
  }
}
export type EndpointPace = ReturnType<typeof endpointPace>

interface Slot { webhookId: string, started: number }

/**
 * The single-job slots of the webhook queue, per endpoint, in this process. An endpoint holds at
 * most `perEndpoint` (`quick` if it has been answering quickly and none of its jobs is stuck); the
 * slow ones (slow lately, or one of their jobs in flight for `pace.slowAfterMs`) hold at most
 * `slowInAll` between them, so that several receivers hanging at once still leave the others slots.
 * A job refused a slot is held back (see the worker) for `holdMs`: 50 ms for an endpoint not known
 * to be slow, else 1 s more for every `perEndpoint` of its jobs refused in the last 2 s, up to 10 s,
 * so a long backlog to a hanging receiver costs Redis about a tenth of its jobs a second.
 */
export function singleSlots (pace: EndpointPace, limits = { perEndpoint: webhookSinglesPerEndpoint, quick: webhookSinglesPerQuickEndpoint, slowInAll: webhookSinglesForSlowEndpoints }) {
  const held = new Map<string, Set<Slot>>()
  const refused = new Map<string, number[]>()
  const stuck = (webhookId: string, now: number) => [...(held.get(webhookId) ?? [])].some((slot) => now - slot.started >= pace.slowAfterMs)
  const slow = (webhookId: string, now: number) => pace.slow(webhookId, now) || stuck(webhookId, now)
  return {
    take (webhookId: string, now = Date.now()): { slot: Slot } | { holdMs: number } {
      const mine = held.get(webhookId) ?? new Set<Slot>()
      const isSlow = slow(webhookId, now)
      const limit = !isSlow && pace.quick(webhookId, now) ? limits.quick : limits.perEndpoint
      const slowInFlight = isSlow ? [...held].reduce((sum, [id, slots]) => sum + (slow(id, now) ? slots.size : 0), 0) : 0
      if (mine.size < limit && (!isSlow || slowInFlight < limits.slowInAll)) {
        const slot = { webhookId, started: now }
        mine.add(slot)
        held.set(webhookId, mine)
        return { slot }
      }
      if (!isSlow) return { holdMs: 50 }
      const recent = (refused.get(webhookId) ?? []).filter((at) => now - at < 2000)
      recent.push(now)
      refused.set(webhookId, recent)
      return { holdMs: Math.min(webhookTimeoutMs, 1000 * (1 + Math.floor(recent.length / limits.perEndpoint))) }
    },
    give (slot: Slot) {
      const slots = held.get(slot.webhookId)
      slots?.delete(slot)
      if (slots?.size === 0) {
        held.delete(slot.webhookId)
        refused.delete(slot.webhookId)
      }
    }
  }
}

/**
 * The batch processor: first attempts of fresh deliveries to one endpoint, all at once. Each that
 * fails (the failure recorded as for any attempt) is handed over for its retries. The batch itself
 * fails if the hand-over does, or if reading a delivery or recording its failure did, and then a
 * run again tries only what no attempt has reached and hands the rest over once more.
 *
 * A batch holds its queue slot until its slowest POST ends, up to 10 s. So that an endpoint that
 * hangs cannot take the slots from the others, an endpoint is slow while a batch of it in this
 * process has run for `slowAfterMs`, and for `slowForMs` after such a batch ends: its batches are
 * then handed over whole as single jobs (64 slots, one per delivery, at most
 * `webhookSinglesPerEndpoint` of them to one endpoint), as every delivery was before batches. And
 * an endpoint runs at most `perEndpoint` batches at once in this process, `perQuickEndpoint` (by
 * default no limit) if it has been answering quickly (`pace`): before any had run for
 * `slowAfterMs`, a hanging endpoint with a backlog took all 8 slots for 10 s. A batch beyond that
 * answers 'busy', and the worker holds its job back a moment. Capped at 4 always, one quick
 * receiver's backlog went out at half the rate (`pnpm bench:notifications`); at 6, at three
 * quarters. So a quick endpoint that starts to hang can still take every batch slot for one round
 * of 10 s, until its batches are seen to be slow.
 */
export function webhookBatchRunner (deps: WebhookDeps, options: { handOver: BatchHandOver, onFailed?: () => void, slowAfterMs?: number, slowForMs?: number, perEndpoint?: number, perQuickEndpoint?: number }) {
  const { handOver, onFailed, slowAfterMs = 1000, slowForMs = 60_000, perEndpoint = webhookBatchesPerEndpoint, perQuickEndpoint = Infinity } = options
  // The worker's pace, which its single jobs feed too; a pace of the runner's own without one.
  const pace = deps.pace ?? endpointPace(slowAfterMs, slowForMs)
  const paced = { ...deps, pace }
  const running = new Map<string, Set<{ started: number }>>()
  return async ({ webhookId, deliveryIds }: { webhookId: string, deliveryIds: string[] }): Promise<'busy' | undefined> => {
    const mine = { started: Date.now() }
    const batches = running.get(webhookId) ?? new Set()
    if (pace.slow(webhookId, mine.started) || [...batches].some((other) => mine.started - other.started >= pace.slowAfterMs)) {
      await handOver.single(webhookId, deliveryIds)
      return
    }
    if (batches.size >= (pace.quick(webhookId, mine.started) ? perQuickEndpoint : perEndpoint)) return 'busy'
    batches.add(mine)
    running.set(webhookId, batches)
    let results: PromiseSettledResult<'delivered' | 'skipped' | 'attempted'>[]
    try {
      results = await Promise.allSettled(deliveryIds.map(async (id) => await deliverWebhook(paced, id, { generation: 0, freshOnly: true })))
    } finally {
      batches.delete(mine)
      if (batches.size === 0) running.delete(webhookId)
    }
    const again: string[] = []
    let unexpected: unknown
    results.forEach((result, i) => {
      const id = deliveryIds[i] as string
      if (result.status === 'fulfilled') {
        if (result.value === 'attempted') again.push(id)
      } else if (result.reason instanceof DeliveryError) {
        onFailed?.()
        if (!result.reason.ended) again.push(id)
      } else {
        unexpected ??= result.reason
      }
    })
    await handOver.retry(webhookId, again)
    if (unexpected !== undefined) throw unexpected
  }
}
