/**
 * Throttling of failed sign-ins, always on and separate from the request rate limits. The audit
 * trail is the record: failures are counted from `auth.login_failed` events over a sliding window,
 * per account and per address, so every API process sees the same counts.
 *
 * An email with no account is throttled exactly like an account, or a 429 would tell who has one.
 * Its failures are recorded against a pseudonym instead of a user id: an HMAC of the normalised
 * email, keyed with a key derived from the access-token signing key (so every API process computes
 * the same one and nobody without the key can test guesses against the trail), written as a UUID
 * (version 8, "custom") with target type `unknown_account`. Staff emails are personal data and
 * never enter the trail.
 */
import { createHmac, createPrivateKey, hkdfSync } from 'node:crypto'
import { auditEvents, type AuditTargetType, type Db } from '@haven/schema'
import { and, count, eq, gt, min, sql } from 'drizzle-orm'

export const throttleWindowMs = 15 * 60 * 1000
export const maxFailuresPerAccount = 5
export const maxFailuresPerIp = 20

/** The key of the unknown-account pseudonyms, derived once from the token signing key (Ed25519 PEM). */
export function pseudonymKeyFrom (signingKeyPem: string): Buffer {
  const secret = createPrivateKey(signingKeyPem).export({ type: 'pkcs8', format: 'der' })
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'haven sign-in throttle pseudonym', 32))
}

/** Case and surrounding spaces make no other sign-in name, as in the account lookup. */
const normaliseEmail = (email: string) => email.trim().toLowerCase()

/** The pseudonym of an email with no account: 122 bits of its HMAC as a version 8 UUID. */
export function unknownAccountId (key: Buffer, email: string): string {
  const bytes = createHmac('sha256', key).update(normaliseEmail(email)).digest().subarray(0, 16)
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x80
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80
  const hex = bytes.toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/** What failed sign-ins are counted and recorded under: the account, or the email's pseudonym. */
export interface SignInTarget { type: Extract<AuditTargetType, 'user' | 'unknown_account'>, id: string }

/**
 * Serialises the sign-ins of one account (or unknown email) until the transaction ends: the count,
 * the password check and the recorded failure then act as one, whatever the number of API processes.
 * The lock is held through the argon2 check, but only while the account is under its limit: once it
 * is locked, each attempt holds it for one count.
 */
export async function lockSignInTarget (tx: Db, target: SignInTarget): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`haven.sign-in:${target.id}`}, 0))`)
}

/** Seconds until another attempt is allowed, or 0 when it is allowed now. */
async function retryAfter (db: Db, column: typeof auditEvents.ip | typeof auditEvents.targetId, value: string, max: number): Promise<number> {
  const since = new Date(Date.now() - throttleWindowMs)
  const [row] = await db.select({ failures: count(), oldest: min(auditEvents.occurredAt) }).from(auditEvents)
    .where(and(eq(auditEvents.action, 'auth.login_failed'), eq(column, value), gt(auditEvents.occurredAt, since)))
  if (row === undefined || row.failures < max || row.oldest === null) return 0
  return Math.max(1, Math.ceil((new Date(row.oldest).getTime() + throttleWindowMs - Date.now()) / 1000))
}

export const ipRetryAfter = async (db: Db, ip: string) => await retryAfter(db, auditEvents.ip, ip, maxFailuresPerIp)
export const accountRetryAfter = async (db: Db, target: SignInTarget) => await retryAfter(db, auditEvents.targetId, target.id, maxFailuresPerAccount)
