/**
 * Email to an agency's shared inbox through SMTP_URL: a plain subject and body with the reference,
 * urgency and a link, nothing identifying. One row per (event, agency) records that it went; a
 * retried job finds it sent and does nothing. (A crash between the SMTP answer and that row can
 * send one email twice: at-least-once, the best SMTP allows.)
 */
import { agencies, type Db, emailDeliveries } from '@haven/schema'
import { and, eq, sql } from 'drizzle-orm'
import type { Transporter } from 'nodemailer'
import { loadEventFacts } from './facts.ts'
import { emailFor } from './messages.ts'

export interface EmailDeps { db: Db, transport: Transporter, from: string, publicUrl: string }

/** Sends one email, or finds it already sent. `finalAttempt`: a failure now is for good. */
export async function sendEmail (deps: EmailDeps, job: { eventId: string, agencyId: string }, finalAttempt: boolean): Promise<'sent' | 'skipped'> {
  const key = and(eq(emailDeliveries.eventId, job.eventId), eq(emailDeliveries.agencyId, job.agencyId))
  const [delivery] = await deps.db.select().from(emailDeliveries).where(key)
  if (delivery === undefined || delivery.status !== 'pending') return 'skipped'
  const facts = await loadEventFacts(deps.db, job.eventId)
  const [agency] = await deps.db.select({ contactEmail: agencies.contactEmail }).from(agencies).where(eq(agencies.id, job.agencyId))
  if (facts === undefined || agency === undefined) {
    await deps.db.update(emailDeliveries).set({ status: 'failed', lastError: 'the event or agency is gone' }).where(key)
    return 'skipped'
  }
  try {
    await deps.transport.sendMail({ from: deps.from, to: agency.contactEmail, ...emailFor(facts, deps.publicUrl) })
  } catch (error) {
    // The SMTP error code and text, never the message or the address.
    const reason = (error as { responseCode?: number, code?: string }).responseCode ?? (error as { code?: string }).code ?? 'error'
    await deps.db.update(emailDeliveries).set({
      attempts: sql`${emailDeliveries.attempts} + 1`, lastError: `SMTP ${String(reason)}`, ...(finalAttempt ? { status: 'failed' as const } : {})
    }).where(key)
    // Not the SMTP error itself, nor as cause: its text can name the address, and the queue keeps failure reasons.
    // eslint-disable-next-line preserve-caught-error
    throw new Error(`SMTP ${String(reason)}`)
  }
  await deps.db.update(emailDeliveries).set({ status: 'delivered', attempts: sql`${emailDeliveries.attempts} + 1`, sentAt: sql`now()`, lastError: null }).where(key)
  return 'sent'
}
