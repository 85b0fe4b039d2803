/**
 * The reminder and expiry sweeper, and the safety net under the queues. The database is the truth:
 * every pass looks at deadlines in the shares table, so a Redis restart loses no deadline, and it
 * hands pending email and webhook deliveries to their queues again (deterministic job ids make that
 * a no-op for work Redis still holds). Several workers may sweep at once: each change is one
 * conditional UPDATE … RETURNING, so each share expires and is reminded exactly once.
 *
 * It is a loop in every worker (every 5 s), not a BullMQ repeatable job, as the audit sealer is: shares
 * go on expiring while Redis is down (their outbox rows wait for it), and the conditional UPDATEs
 * already give what a queue's single scheduled run would.
 *
 * - past half its response time, a pending share is reminded (outbox `share.reminder` to the recipient);
 * - past `respondBy`, a pending share expires through the state machine, with its `share.expire`
 *   audit event and outbox row (the origin is told).
 */
import {
  type AuditContext, type Database, rowsOf, shares, shareTransitions, writeAuditEvents, writeOutbox
} from '@haven/schema'
import { and, eq, inArray, lte, sql } from 'drizzle-orm'
import type { Queues } from './queues.ts'

const systemContext: AuditContext = { actor: { userId: null, agencyId: null, roles: [] }, requestId: null, ip: null, purpose: 'case_management' }
const batch = 500

export async function expireShares (database: Database): Promise<number> {
  const expire = shareTransitions.expire
  return await database.db.transaction(async (tx) => {
    const expired = await tx.update(shares).set({ status: expire.to, updatedAt: sql`now()` })
      .where(and(inArray(shares.status, [...expire.from]), lte(shares.respondBy, sql`now()`),
        inArray(shares.id, sql`(select id from shares where status = 'pending' and respond_by <= now() order by respond_by limit ${batch} for update skip locked)`)))
      .returning({ id: shares.id, referralId: shares.referralId, agencyId: shares.agencyId })
    await writeAuditEvents(tx, systemContext, expired.map((share) => ({
      action: expire.audit, outcome: 'success' as const, referralId: share.referralId, target: { type: 'share' as const, id: share.id }, recipientAgencyId: share.agencyId
    })))
    await writeOutbox(tx, expired.map((share) => ({ type: expire.outbox, payload: { referralId: share.referralId, shareId: share.id, agencyId: share.agencyId } })))
    return expired.length
  })
}

export async function remindShares (database: Database): Promise<number> {
  return await database.db.transaction(async (tx) => {
    const reminded = await tx.update(shares).set({ remindedAt: sql`now()` })
      .where(and(eq(shares.status, 'pending'), sql`${shares.remindedAt} is null`,
        sql`now() >= ${shares.createdAt} + (${shares.respondBy} - ${shares.createdAt}) / 2`,
        inArray(shares.id, sql`(select id from shares where status = 'pending' and reminded_at is null
          and now() >= created_at + (respond_by - created_at) / 2 order by respond_by limit ${batch} for update skip locked)`)))
      .returning({ id: shares.id, referralId: shares.referralId, agencyId: shares.agencyId })
    await writeOutbox(tx, reminded.map((share) => ({ type: 'share.reminder' as const, payload: { referralId: share.referralId, shareId: share.id, agencyId: share.agencyId } })))
    return reminded.length
  })
}

/**
 * Hands pending deliveries to their queues again: those idle for `graceSeconds` (Redis may have lost
 * them; if not, the job id makes this a no-op) and manual retries (a new generation) at once.
 * Webhooks go back as single jobs. A fresh delivery whose batch still waits behind a backlog older
 * than `graceSeconds` gets one too: whichever job comes first attempts it, and the batch then finds
 * it delivered, or attempted and with its retry job already there (had both started together, the
 * receiver would see it twice and dedupe on Haven-Event-Id). The database counts its attempts.
 * Oldest first (by the last attempt, else creation), at most `batch` of each a pass.
 */
export async function redispatchDeliveries (database: Database, queues: Queues, graceSeconds = 30): Promise<number> {
  const emails = await rowsOf<{ event_id: string, agency_id: string }>(database.db, sql`
    select event_id, agency_id from email_deliveries
    where status = 'pending' and created_at < now() - make_interval(secs => ${graceSeconds})
    order by created_at limit ${batch}`)
  const hooks = await rowsOf<{ id: string, generation: number, webhookId: string }>(database.db, sql`
    select id, generation, webhook_id::text as "webhookId" from webhook_deliveries
    where status = 'pending'
      and ((generation > 0 and attempts = 0) or coalesce(last_attempt_at, created_at) < now() - make_interval(secs => ${graceSeconds}))
    order by coalesce(last_attempt_at, created_at) limit ${batch}`)
  await queues.addEmails(emails.map((row) => ({ eventId: row.event_id, agencyId: row.agency_id })))
  await queues.addWebhooks(hooks)
  return emails.length + hooks.length
}
