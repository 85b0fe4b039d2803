/**
 * Fan-out: outbox messages to the people and systems that must act, on every channel. In-app
 * notifications are written here directly (they are rows in our own database); email and webhook
 * deliveries are recorded as pending rows and handed to their queues. Everything is keyed by the
 * message id, so running this twice for one message changes nothing the second time.
 */
import { randomUUID } from 'node:crypto'
import { type Database, type Db, type OutboxType, type Role, rowsOf } from '@haven/schema'
import { sql } from 'drizzle-orm'
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

/** The routing table as one JSON parameter, unpacked by PostgreSQL next to the messages. */
const routes = JSON.stringify(Object.entries(routing).map(([type, route]) => ({
  type, to_recipient: route.to === 'recipient', roles: `{${route.inApp.join(',')}}`, email: route.email
})))

export interface FanoutDeps { database: Database, queues: Queues, emailEnabled: boolean }

/**
 * One statement for a fan-out job's messages (up to 50), whatever the number of recipients: it reads
 * the messages not yet processed, records every channel's work and marks them processed (a single
 * statement is atomic on its own). A message already processed, or one whose referral or recipient
 * is gone, gets nothing new. Per message this replaced two statements and a queue job of its own
 * (`pnpm bench:notifications`). Two runs over the same messages at once (a batch handed over again)
 * meet on the unique keys and the row lock of the outbox update: each row is written once.
 */
export async function fanOut (deps: FanoutDeps, outboxIds: string[]): Promise<{ processed: number }> {
  if (outboxIds.length === 0) return { processed: 0 }
  const rows = await rowsOf<{ channel: 'webhook' | 'email' | 'message', id: string, target: string | null }>(deps.database.db, sql`
    with message as (
      select o.id, o.type, o.payload, r.reference, route.roles, route.email and ${deps.emailEnabled}::boolean as email,
        case when route.to_recipient then (o.payload->>'agencyId')::uuid else r.origin_agency_id end as target
      from outbox o
      join json_to_recordset(${routes}::json) as route(type event_type, to_recipient boolean, roles role[], email boolean) on route.type = o.type
      left join referrals r on r.id = (o.payload->>'referralId')::uuid
      where o.id = any(${`{${outboxIds.join(',')}}`}::uuid[]) and o.processed_at is null
    ), deliverable as (
      select * from message where reference is not null and target is not null
    ), notified as (
      insert into notifications (user_id, source_id, type, referral_id, share_id, reference)
      select u.id, m.id, m.type::text::notification_type, (m.payload->>'referralId')::uuid, (m.payload->>'shareId')::uuid, m.reference
      from deliverable m join users u on u.agency_id = m.target join agencies a on a.id = u.agency_id
      where u.status = 'active' and a.status = 'active' and u.roles && m.roles
      on conflict (source_id, user_id) do nothing
      returning 1
    ), emailed as (
      insert into email_deliveries (event_id, agency_id)
      select m.id, m.target from deliverable m where m.email
      on conflict do nothing
      returning 1
    ), hooked as (
      insert into webhook_deliveries (webhook_id, event_id, type)
      select w.id, m.id, m.type from deliverable m
      join webhooks w on w.agency_id = m.target and w.status = 'active' and w.deleted_at is null and m.type = any(w.events)
      on conflict (webhook_id, event_id) do nothing
      returning id, webhook_id
    ), processed as (
      update outbox set processed_at = now() where id in (select id from message) returning 1
    )
    select 'webhook' as channel, id::text, webhook_id::text as target from hooked
    -- No earlier run can have left deliveries of these messages: deliveries and processed_at commit
    -- in this one statement. Pending deliveries whose job Redis lost are the sweeper's
    -- (redispatchDeliveries).
    union all
    select 'email', m.id::text, m.target::text from deliverable m where m.email
    union all
    select 'message', id::text, null from message`)
  // Handed over after the write; if Redis fails now, the sweeper hands the pending rows over later.
  await deps.queues.addEmails(rows.filter((row) => row.channel === 'email').map((row) => ({ eventId: row.id, agencyId: row.target ?? '' })))
  await deps.queues.addWebhookBatches(rows.filter((row) => row.channel === 'webhook').map((row) => ({ id: row.id, webhookId: row.target ?? '' })))
  return { processed: rows.filter((row) => row.channel === 'message').length }
}

/**
 * Agency admins hear in-app that their endpoint was switched off after failing again and again: each
 * time it is (a manual retry switches it on again), so each switch is a source of its own. The
 * caller calls this once a switch, in the transaction that makes it.
 */
export async function notifyWebhookDisabled (db: Db, agencyId: string) {
  await db.execute(sql`
    insert into notifications (user_id, source_id, type)
    select u.id, ${randomUUID()}, 'webhook.disabled' from users u
    where u.agency_id = ${agencyId} and u.status = 'active' and 'agency_admin' = any(u.roles)`)
}
