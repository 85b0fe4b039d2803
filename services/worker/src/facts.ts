import { type Db, outbox, referrals } from '@haven/schema'
import { eq, sql } from 'drizzle-orm'
import type { EventFacts } from './messages.ts'

/** The facts about one event a message may carry, re-read from the database; undefined when gone. */
export async function loadEventFacts (db: Db, eventId: string): Promise<EventFacts | undefined> {
  const [row] = await db.select({
    type: outbox.type, occurredAt: outbox.createdAt, payload: outbox.payload, reference: referrals.reference, urgency: referrals.urgency
  }).from(outbox).innerJoin(referrals, sql`${referrals.id} = (${outbox.payload}->>'referralId')::uuid`).where(eq(outbox.id, eventId))
  if (row === undefined) return undefined
  return { eventId, type: row.type, occurredAt: row.occurredAt, referralId: row.payload.referralId, reference: row.reference, urgency: row.urgency, shareId: row.payload.shareId, agencyId: row.payload.agencyId }
}
