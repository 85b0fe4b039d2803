/**
 * A referral's timeline, built from what is already recorded: the audit trail's successful state
 * changes on the referral, and its notes. The origin sees everything; a recipient sees its own
 * agency's share events and, once it has more than a triage card, the notes it may read.
 */
import { type AuditAction, auditEvents, type AuditContext, type Db, notes, type TimelineEntry, writeAuditEvent } from '@haven/schema'
import { and, asc, eq, inArray } from 'drizzle-orm'
import type { Caller } from '../plugins/auth.ts'
import { toNote } from '../notes/notes.queries.ts'
import { withReferral } from './referral-access.ts'
import { mayReadNote } from './referrals.policy.ts'

const entryTypes: Partial<Record<AuditAction, string>> = {
  'referral.create': 'referral.created',
  'referral.update': 'referral.updated',
  'referral.close': 'referral.closed',
  'share.create': 'share.created',
  'share.accept': 'share.accepted',
  'share.decline': 'share.declined',
  'share.withdraw': 'share.withdrawn',
  'share.close': 'share.closed',
  'share.expire': 'share.expired'
}
const timelineActions = Object.keys(entryTypes) as AuditAction[]

export async function readTimeline (db: Db, caller: Caller, context: AuditContext, id: string) {
  return await withReferral(db, caller, context, { id, action: 'timeline.read' }, async (tx, { access }) => {
    const events = await tx.select().from(auditEvents)
      .where(and(eq(auditEvents.referralId, id), eq(auditEvents.outcome, 'success'), inArray(auditEvents.action, timelineActions)))
      .orderBy(asc(auditEvents.seq))
    const noteRows = access.view === 'triage' ? [] : await tx.select().from(notes).where(eq(notes.referralId, id)).orderBy(asc(notes.createdAt))
    const items: TimelineEntry[] = [
      ...events
        .filter((event) => access.view === 'origin' || (event.action.startsWith('share.') && event.recipientAgencyId === caller.agencyId))
        .map((event) => ({
          id: event.id,
          at: event.occurredAt.toISOString(),
          type: entryTypes[event.action] ?? event.action,
          actorAgencyId: event.actorAgencyId,
          ...(event.targetType === 'share' && event.targetId !== null ? { shareId: event.targetId } : {}),
          ...(event.recipientAgencyId !== null ? { agencyId: event.recipientAgencyId } : {})
        })),
      ...noteRows.filter((note) => mayReadNote(caller, access, note)).map((note) => ({
        id: note.id,
        at: note.createdAt.toISOString(),
        type: 'note.created',
        actorAgencyId: note.agencyId,
        note: toNote(note)
      }))
    ].sort((a, b) => a.at.localeCompare(b.at))
    await writeAuditEvent(tx, context, { action: 'timeline.read', outcome: 'success', referralId: id, target: { type: 'referral', id } })
    return { items, nextCursor: null }
  })
}
