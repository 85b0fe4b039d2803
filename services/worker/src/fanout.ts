/**
 * Fan-out: one outbox message to the people and systems that must act, on every channel. In-app
 * notifications are written here directly (they are rows in our own database); email and webhook
 * deliveries are recorded as pending rows and handed to their queues. Everything is keyed by the
 * message id, so running this twice for one message changes nothing the second time.
 */
import { type Database, type Db, outbox, type OutboxType, referrals, type Role, rowsOf } from '@haven/schema'
import { eq, sql } from 'drizzle-orm'
import type { Queues } from './queues.ts'

/**
 * Who hears of each event: the agency a share is addressed to, or the referral's origin; which of
 * its users get an in-app notification; whether its shared inbox gets an email. Webhooks of that
 * agency subscribed to the event type always get it.
 */
export const routing: Record<OutboxType, { to: 'recipient' | 'origin', inApp: Role[], email: boolean }> = {
  'share.created': { to: 'recipient', inApp: ['caseworker'], email: true },
  'share.reminder': { to: 'recipient', inApp: ['caseworker'], email: true },
  'share.withdrawn': { to: 'recipient', inApp: ['caseworker'], email: true },
  'share.accepted': { to: 'origin', inApp: ['referrer', 'caseworker'], email: true },
  'share.declined': { to: 'origin', inApp: ['referrer', 'caseworker'], email: true },
  'share.closed': { to: 'origin', inApp: ['referrer', 'caseworker'], email: true },
  'share.expired': { to: 'origin', inApp: ['referrer', 'caseworker'], email: true },
  // The origin closed it itself: only its systems need to hear.
  'referral.closed': { to: 'origin', inApp: [], email: false }
}

export interface FanoutDeps { database: Database, queues: Queues, emailEnabled: boolean }

/**
 * Two statements whatever the number of recipients: one read, then one write that records every
 * channel's work and marks the message processed (a single statement is atomic on its own).
 */
export async function fanOut (deps: FanoutDeps, outboxId: string): Promise<'done' | 'skipped'> {
  const db: Db = deps.database.db
  const [message] = await db.select({
    type: outbox.type, payload: outbox.payload, processedAt: outbox.processedAt, reference: referrals.reference, originAgencyId: referrals.originAgencyId
  }).from(outbox).leftJoin(referrals, sql`${referrals.id} = (${outbox.payload}->>'referralId')::uuid`).where(eq(outbox.id, outboxId))
  if (message === undefined || message.processedAt !== null) return 'skipped'
  const { referralId, shareId, agencyId } = message.payload
  const route = routing[message.type]
  const target = route.to === 'recipient' ? agencyId : message.originAgencyId
  if (message.reference === null || target === null) {
    await db.update(outbox).set({ processedAt: sql`now()` }).where(eq(outbox.id, outboxId))
    return 'skipped'
  }
  const email = route.email && deps.emailEnabled
  const roles = `{${route.inApp.join(',')}}`
  const pendingWebhooks = await rowsOf<{ id: string, generation: number }>(db, sql`
    with notified as (
      insert into notifications (user_id, source_id, type, referral_id, share_id, reference)
      select u.id, ${outboxId}, ${message.type}, ${referralId}, ${shareId}, ${message.reference}
      from users u join agencies a on a.id = u.agency_id
      where u.agency_id = ${target} and u.status = 'active' and a.status = 'active' and u.roles && ${roles}::role[]
      on conflict (source_id, user_id) do nothing
      returning 1
    ), emailed as (
      insert into email_deliveries (event_id, agency_id)
      select ${outboxId}, ${target} where ${email}
      on conflict do nothing
      returning 1
    ), hooked as (
      insert into webhook_deliveries (webhook_id, event_id, type)
      select w.id, ${outboxId}, ${message.type} from webhooks w
      where w.agency_id = ${target} and w.status = 'active' and w.deleted_at is null and ${message.type}::event_type = any(w.events)
      on conflict (webhook_id, event_id) do nothing
      returning id, generation
    ), processed as (
      update outbox set processed_at = now() where id = ${outboxId} returning 1
    )
    -- Deliveries recorded by an earlier, interrupted run are handed over again too.
    select id, generation from hooked
    union all
    select id, generation from webhook_deliveries where event_id = ${outboxId} and status = 'pending'`)
  // Handed over after the write; if Redis fails now, the sweeper hands the pending rows over later.
  if (email) await deps.queues.addEmails([{ eventId: outboxId, agencyId: target }])
  await deps.queues.addWebhooks(pendingWebhooks)
  return 'done'
}

/** Agency admins hear in-app that their endpoint was switched off after failing again and again. */
export async function notifyWebhookDisabled (db: Db, webhookId: string, agencyId: string) {
  await db.execute(sql`
    insert into notifications (user_id, source_id, type)
    select u.id, ${webhookId}, 'webhook.disabled' from users u
    where u.agency_id = ${agencyId} and u.status = 'active' and 'agency_admin' = any(u.roles)
    on conflict (source_id, user_id) do nothing`)
}
