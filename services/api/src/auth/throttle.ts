/**
 * Throttling of failed sign-ins, always on and separate from the request rate limits. The audit
 * trail is the record: failures are counted from `auth.login_failed` events over a sliding window,
 * per account and per address, so every API process sees the same counts.
 */
import { auditEvents, type Db } from '@haven/schema'
import { and, count, eq, gt, min } from 'drizzle-orm'

export const throttleWindowMs = 15 * 60 * 1000
export const maxFailuresPerAccount = 5
export const maxFailuresPerIp = 20

/** Seconds until another attempt is allowed, or 0 when it is allowed now. */
async function retryAfter (db: Db, column: typeof auditEvents.ip | typeof auditEvents.targetId, value: string, max: number): Promise<number> {
  const since = new Date(Date.now() - throttleWindowMs)
  const [row] = await db.select({ failures: count(), oldest: min(auditEvents.occurredAt) }).from(auditEvents)
    .where(and(eq(auditEvents.action, 'auth.login_failed'), eq(column, value), gt(auditEvents.occurredAt, since)))
  if (row === undefined || row.failures < max || row.oldest === null) return 0
  return Math.max(1, Math.ceil((new Date(row.oldest).getTime() + throttleWindowMs - Date.now()) / 1000))
}

export const ipRetryAfter = async (db: Db, ip: string) => await retryAfter(db, auditEvents.ip, ip, maxFailuresPerIp)
export const accountRetryAfter = async (db: Db, userId: string) => await retryAfter(db, auditEvents.targetId, userId, maxFailuresPerAccount)
