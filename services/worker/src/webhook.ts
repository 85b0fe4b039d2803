/**
 * Webhook delivery: POST the event to the endpoint, signed
 * `Haven-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, with the event id
 * in `Haven-Event-Id` for the receiver to dedupe on. 10 s for the whole exchange, no redirects; the
 * URL is checked again, and a host name's address is checked to be public on the very connection
 * (unless HAVEN_WEBHOOK_ALLOW_PRIVATE). A non-2xx
 * answer or a timeout throws, so the queue retries with backoff; the last failure marks the delivery
 * failed, and an endpoint whose deliveries fail this often in a row is switched off.
 */
import { createHmac } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { type Db, outbox, publicOnlyLookup, referrals, webhookDeliveries, webhooks, webhookUrlProblem } from '@haven/schema'
import { eq, sql } from 'drizzle-orm'
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
  constructor (message: string, readonly statusCode: number | null) { super(message) }
}

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

export interface WebhookDeps { db: Db, allowPrivate: boolean, onDelivered?: (latencyMs: number) => void }

export async function deliverWebhook (deps: WebhookDeps, deliveryId: string, finalAttempt: boolean): Promise<'delivered' | 'skipped'> {
  // One read: the delivery, its endpoint, and the facts of its event.
  const [row] = await deps.db.select({
    delivery: webhookDeliveries,
    webhook: webhooks,
    occurredAt: outbox.createdAt,
    payload: outbox.payload,
    reference: referrals.reference,
    urgency: referrals.urgency
  }).from(webhookDeliveries)
    .innerJoin(webhooks, eq(webhooks.id, webhookDeliveries.webhookId))
    .leftJoin(outbox, eq(outbox.id, webhookDeliveries.eventId))
    .leftJoin(referrals, sql`${referrals.id} = (${outbox.payload}->>'referralId')::uuid`)
    .where(eq(webhookDeliveries.id, deliveryId))
  if (row === undefined || row.delivery.status !== 'pending') return 'skipped'
  const { delivery, webhook } = row
  const facts = row.payload === null || row.occurredAt === null || row.reference === null || row.urgency === null
    ? undefined
    : { eventId: delivery.eventId, type: delivery.type, occurredAt: row.occurredAt, referralId: row.payload.referralId, reference: row.reference, urgency: row.urgency, shareId: row.payload.shareId, agencyId: row.payload.agencyId }
  if (webhook.status !== 'active' || webhook.deletedAt !== null || facts === undefined) {
    await deps.db.update(webhookDeliveries).set({ status: 'failed', lastError: facts === undefined ? 'the event is gone' : 'the endpoint is disabled or deleted' }).where(eq(webhookDeliveries.id, deliveryId))
    return 'skipped'
  }
  // The URL again: an IP literal never reaches the lookup hook, and the endpoint was checked under
  // the settings of the day it was registered.
  const urlProblem = webhookUrlProblem(webhook.url, deps.allowPrivate)
  if (urlProblem !== null) {
    await deps.db.update(webhookDeliveries).set({ attempts: sql`${webhookDeliveries.attempts} + 1`, lastError: `the URL ${urlProblem}`, lastAttemptAt: sql`now()`, ...(finalAttempt ? { status: 'failed' as const } : {}) })
      .where(eq(webhookDeliveries.id, deliveryId))
    throw new DeliveryError(`the URL ${urlProblem}`, null)
  }
  const body = JSON.stringify(webhookBody(facts))
  try {
    const status = await post(webhook.url, { 'haven-event-id': delivery.eventId, 'haven-signature': signatureHeader(webhook.secret, body) }, body, deps.allowPrivate)
    await deps.db.execute(sql`
      with delivered as (
        update webhook_deliveries set status = 'delivered', attempts = attempts + 1, last_status_code = ${status}, last_error = null,
          last_attempt_at = now(), delivered_at = now()
        where id = ${deliveryId}
        returning webhook_id
      )
      update webhooks set consecutive_failures = 0 where id in (select webhook_id from delivered) and consecutive_failures <> 0`)
    deps.onDelivered?.(Date.now() - facts.occurredAt.getTime())
    return 'delivered'
  } catch (error) {
    const failure = error instanceof DeliveryError ? error : new DeliveryError('delivery failed', null)
    await deps.db.transaction(async (tx) => {
      await tx.update(webhookDeliveries).set({
        attempts: sql`${webhookDeliveries.attempts} + 1`, lastStatusCode: failure.statusCode, lastError: failure.message, lastAttemptAt: sql`now()`,
        ...(finalAttempt ? { status: 'failed' as const } : {})
      }).where(eq(webhookDeliveries.id, deliveryId))
      if (!finalAttempt) return
      const [updated] = await tx.update(webhooks).set({ consecutiveFailures: sql`${webhooks.consecutiveFailures} + 1` })
        .where(eq(webhooks.id, webhook.id)).returning({ failures: webhooks.consecutiveFailures })
      if ((updated?.failures ?? 0) >= maxConsecutiveFailures) {
        await tx.update(webhooks).set({ status: 'disabled' }).where(eq(webhooks.id, webhook.id))
        await notifyWebhookDisabled(tx, webhook.id, webhook.agencyId)
      }
    })
    throw failure
  }
}
