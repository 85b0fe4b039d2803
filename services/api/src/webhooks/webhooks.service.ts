/**
 * Webhook endpoints of an agency, managed by its own agency admins. The signing secret is generated
 * here, returned once at registration, and never listed. A target must be https and public (unless
 * HAVEN_WEBHOOK_ALLOW_PRIVATE): checked here on the URL and its DNS answer, and again by the worker
 * on the address it connects to. A retry puts a delivery back in the queue: the worker's sweeper
 * picks a retried delivery up at its next pass (every few seconds), so the API never waits on Redis.
 */
import { randomBytes } from 'node:crypto'
import {
  type AuditContext, type AuditEventInput, type Db, type DeliveryListQuery, webhookDeliveries, type WebhookCreate, webhookHostProblem, webhooks,
  webhookUrlProblem, writeAuditEvent
} from '@haven/schema'
import { and, desc, eq, isNull, sql } from 'drizzle-orm'
import { refuse } from '../audit.ts'
import { conflict, forbidden, HttpProblem, notFound, unprocessable } from '../errors.ts'
import { decodeCursor, defaultPageSize, toPage } from '../pagination.ts'
import type { Caller } from '../plugins/auth.ts'

const mayManageWebhooks = (caller: Caller, agencyId: string) => caller.roles.includes('agency_admin') && caller.agencyId === agencyId
const notYours = () => forbidden('Only the agency\'s own admins manage its webhooks.')

const toWebhook = (row: typeof webhooks.$inferSelect) => ({
  id: row.id, url: row.url, events: row.events, status: row.status, createdAt: row.createdAt.toISOString()
})

export async function createWebhook (db: Db, caller: Caller, context: AuditContext, agencyId: string, input: WebhookCreate, allowPrivate: boolean) {
  if (!mayManageWebhooks(caller, agencyId)) throw await refuse(db, context, { action: 'webhook.create', target: { type: 'agency', id: agencyId } }, notYours())
  const problem = webhookUrlProblem(input.url, allowPrivate) ?? await webhookHostProblem(input.url, allowPrivate)
  if (problem !== null) throw unprocessable(`The webhook URL ${problem}.`, [{ path: '/body/url', message: problem }])
  const secret = `whsec_${randomBytes(32).toString('base64url')}`
  return await db.transaction(async (tx) => {
    const [row] = await tx.insert(webhooks).values({ agencyId, url: input.url, events: input.events, secret, createdBy: caller.userId }).returning()
    if (row === undefined) throw new Error('insert returned no webhook')
    await writeAuditEvent(tx, context, { action: 'webhook.create', outcome: 'success', target: { type: 'webhook', id: row.id } })
    return { ...toWebhook(row), secret }
  })
}

/**
 * A webhook read or retry in one transaction with its audit event (`webhook.list`, `delivery.list`,
 * `delivery.retry`: extensions of the contract's action names). A refusal (403, 404, 409) is recorded
 * under the same action as `denied`, in its own transaction, since the refused work has none.
 */
async function audited<T> (db: Db, context: AuditContext, event: Pick<AuditEventInput, 'action' | 'target'>, work: (tx: Db) => Promise<T>): Promise<T> {
  try {
    return await db.transaction(async (tx) => {
      const result = await work(tx)
      await writeAuditEvent(tx, context, { ...event, outcome: 'success' })
      return result
    })
  } catch (error) {
    throw error instanceof HttpProblem && error.status < 500 ? await refuse(db, context, event, error) : error
  }
}

export async function listWebhooks (db: Db, caller: Caller, context: AuditContext, agencyId: string, query: { limit?: number, cursor?: string }) {
  return await audited(db, context, { action: 'webhook.list', target: { type: 'agency', id: agencyId } }, async (tx) => {
    if (!mayManageWebhooks(caller, agencyId)) throw notYours()
    const limit = query.limit ?? defaultPageSize
    const after = decodeCursor(query.cursor, ['timestamp', 'uuid'])
    const rows = await tx.select().from(webhooks).where(and(
      eq(webhooks.agencyId, agencyId), isNull(webhooks.deletedAt),
      after !== undefined ? sql`(${webhooks.createdAt}, ${webhooks.id}) > (${after[0]}::timestamptz, ${after[1]}::uuid)` : undefined
    )).orderBy(webhooks.createdAt, webhooks.id).limit(limit + 1)
    return toPage(rows, limit, (row) => [row.createdAt.toISOString(), row.id], toWebhook)
  })
}

async function findWebhook (db: Db, agencyId: string, webhookId: string) {
  const [row] = await db.select().from(webhooks).where(and(eq(webhooks.id, webhookId), eq(webhooks.agencyId, agencyId), isNull(webhooks.deletedAt)))
  if (row === undefined) throw notFound('webhook')
  return row
}

/** Deleted endpoints are kept (deliveries refer to them) but receive nothing more. */
export async function deleteWebhook (db: Db, caller: Caller, context: AuditContext, agencyId: string, webhookId: string) {
  if (!mayManageWebhooks(caller, agencyId)) throw await refuse(db, context, { action: 'webhook.delete', target: { type: 'webhook', id: webhookId } }, notYours())
  await findWebhook(db, agencyId, webhookId)
  await db.transaction(async (tx) => {
    await tx.update(webhooks).set({ deletedAt: sql`now()` }).where(eq(webhooks.id, webhookId))
    await writeAuditEvent(tx, context, { action: 'webhook.delete', outcome: 'success', target: { type: 'webhook', id: webhookId } })
  })
}

const toDelivery = (row: typeof webhookDeliveries.$inferSelect) => ({
  id: row.id,
  eventId: row.eventId,
  type: row.type,
  status: row.status,
  attempts: row.attempts,
  lastStatusCode: row.lastStatusCode,
  lastError: row.lastError,
  createdAt: row.createdAt.toISOString(),
  lastAttemptAt: row.lastAttemptAt?.toISOString() ?? null,
  deliveredAt: row.deliveredAt?.toISOString() ?? null
})

export async function listDeliveries (db: Db, caller: Caller, context: AuditContext, agencyId: string, webhookId: string, query: DeliveryListQuery) {
  return await audited(db, context, { action: 'delivery.list', target: { type: 'webhook', id: webhookId } }, async (tx) => {
    if (!mayManageWebhooks(caller, agencyId)) throw notYours()
    await findWebhook(tx, agencyId, webhookId)
    const limit = query.limit ?? defaultPageSize
    const after = decodeCursor(query.cursor, ['timestamp', 'uuid'])
    const rows = await tx.select().from(webhookDeliveries).where(and(
      eq(webhookDeliveries.webhookId, webhookId),
      query.status !== undefined ? eq(webhookDeliveries.status, query.status) : undefined,
      after !== undefined ? sql`(${webhookDeliveries.createdAt}, ${webhookDeliveries.id}) < (${after[0]}::timestamptz, ${after[1]}::uuid)` : undefined
    )).orderBy(desc(webhookDeliveries.createdAt), desc(webhookDeliveries.id)).limit(limit + 1)
    return toPage(rows, limit, (row) => [row.createdAt.toISOString(), row.id], toDelivery)
  })
}

/**
 * Puts a failed delivery back in line: a new generation (a new queue job), fresh attempts. An
 * endpoint switched off for failing is switched on again: the admin asked for a delivery to it.
 */
export async function retryDelivery (db: Db, caller: Caller, context: AuditContext, agencyId: string, webhookId: string, deliveryId: string) {
  await audited(db, context, { action: 'delivery.retry', target: { type: 'delivery', id: deliveryId } }, async (tx) => {
    if (!mayManageWebhooks(caller, agencyId)) throw notYours()
    await findWebhook(tx, agencyId, webhookId)
    const [row] = await tx.update(webhookDeliveries).set({
      status: 'pending', attempts: 0, generation: sql`${webhookDeliveries.generation} + 1`
    }).where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.webhookId, webhookId), eq(webhookDeliveries.status, 'failed'))).returning()
    if (row === undefined) {
      const [existing] = await tx.select({ status: webhookDeliveries.status }).from(webhookDeliveries)
        .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.webhookId, webhookId)))
      if (existing === undefined) throw notFound('delivery')
      throw conflict(`Only a failed delivery is retried; this one is ${existing.status}.`)
    }
    await tx.update(webhooks).set({ status: 'active', consecutiveFailures: 0 }).where(eq(webhooks.id, webhookId))
  })
}
