/**
 * Shares: the hand-over of a referral to another agency, and its answers. Transitions go through the
 * state machine in @haven/schema as one conditional UPDATE (`where status in (from)`), so of two
 * concurrent transitions exactly one changes the row and the other finds nothing to change: 409.
 */
import {
  agencies, type AuditContext, type Db, defaultResponseHours, notes, type Share, type ShareClose, type ShareCreate, shares,
  shareTransitions, type ShareTransitionName, writeAuditEvent, writeAuditEvents, writeOutbox
} from '@haven/schema'
import { eq } from 'drizzle-orm'
import { conflict, forbidden, isUniqueViolation, notFound, unprocessable } from '../errors.ts'
import type { Caller } from '../plugins/auth.ts'
import { consentCovers } from '../referrals/legal-basis.ts'
import { withReferral } from '../referrals/referral-access.ts'
import { mayAnswer, mayManage, maySeeShare } from '../referrals/referrals.policy.ts'
import { toShare } from '../referrals/referrals.queries.ts'
import { applyShareTransition } from './shares.queries.ts'

const refuseRecipient = (detail: string) => unprocessable(detail, [{ path: '/body/agencyId', message: detail }])

export async function createShare (db: Db, caller: Caller, context: AuditContext, referralId: string, input: ShareCreate) {
  try {
    return await withReferral(db, caller, context, { id: referralId, action: 'share.create', lock: 'share' }, async (tx, { referral, access }) => {
      if (!mayManage(access)) throw forbidden('Only the origin agency shares a referral.')
      if (referral.status === 'closed') throw conflict('The referral is closed: it can no longer be shared.')
      const [agency] = await tx.select().from(agencies).where(eq(agencies.id, input.agencyId))
      if (agency === undefined) throw refuseRecipient('No agency has this id.')
      if (agency.id === referral.originAgencyId) throw refuseRecipient('A referral is not shared with its own agency.')
      if (agency.status !== 'active') throw refuseRecipient('This agency is suspended and cannot receive referrals.')
      if (!agency.acceptsReferrals) throw refuseRecipient('This agency is not accepting referrals.')
      if (!consentCovers(referral.consent, agency.id)) throw refuseRecipient('The person\'s consent does not cover sharing with this agency.')
      const hours = input.respondWithinHours ?? defaultResponseHours[referral.urgency]
      const [row] = await tx.insert(shares).values({
        referralId,
        agencyId: agency.id,
        scopes: input.scopes ?? [],
        message: input.message ?? null,
        respondBy: new Date(Date.now() + hours * 3600 * 1000),
        createdBy: caller.userId
      }).returning()
      if (row === undefined) throw new Error('insert returned no share')
      await writeAuditEvent(tx, context, { action: 'share.create', outcome: 'success', referralId, target: { type: 'share', id: row.id }, recipientAgencyId: agency.id })
      await writeOutbox(tx, [{ type: 'share.created', payload: { referralId, shareId: row.id, agencyId: agency.id } }])
      return toShare(row)
    })
  } catch (error) {
    if (isUniqueViolation(error)) throw conflict('This referral already has a pending or accepted share with that agency.')
    throw error
  }
}

export interface TransitionDetails { declineReason?: string, outcome?: ShareClose['outcome'], note?: string, reason?: string }

/**
 * Applies one transition. Who may: the recipient's caseworkers accept, decline and close; the origin
 * withdraws. A pending share past its deadline can no longer be accepted or declined (the sweeper
 * will mark it expired).
 */
export async function transitionShare (db: Db, caller: Caller, context: AuditContext, referralId: string, shareId: string, name: ShareTransitionName, details: TransitionDetails = {}): Promise<Share> {
  const transition = shareTransitions[name]
  return await withReferral<Share>(db, caller, context, { id: referralId, action: transition.audit, lock: 'share', seeOwnShares: true }, async (tx, { shares: all, access }) => {
    const share = all.find((s) => s.id === shareId)
    if (share === undefined || !maySeeShare(caller, access, share)) throw notFound(access.view === 'none' ? 'referral' : 'share')
    // An agency whose own share ended sees nothing (404), but its caseworkers answering that share
    // are told by the state machine (409), as the loser of two concurrent answers is.
    if (access.view === 'none' && (name === 'withdraw' || !mayAnswer(caller, share))) throw notFound('referral')
    const allowed = name === 'withdraw' ? mayManage(access) : mayAnswer(caller, share)
    if (!allowed) {
      throw forbidden(name === 'withdraw' ? 'Only the origin agency withdraws a share.' : 'Only caseworkers of the receiving agency answer a share.')
    }
    const answering = name === 'accept' || name === 'decline'
    const row = await applyShareTransition(tx, {
      shareId,
      from: transition.from,
      to: transition.to,
      ...(answering ? { answeredBy: caller.userId } : {}),
      ...(details.declineReason !== undefined ? { declineReason: details.declineReason } : {}),
      ...(details.outcome !== undefined ? { outcome: details.outcome } : {})
    })
    if (row === undefined) {
      const pastDeadline = answering && share.status === 'pending' && share.respondBy.getTime() <= Date.now()
      throw conflict(pastDeadline
        ? 'The deadline to answer this share has passed.'
        : `This share cannot be ${transition.to} now: it is ${share.status === 'pending' ? 'no longer pending' : share.status}.`)
    }
    const noteBody = details.note ?? details.reason
    // An outcome note goes to everyone with access; a withdrawal reason stays with the origin.
    const [note] = noteBody === undefined
      ? []
      : await tx.insert(notes).values({ referralId, agencyId: caller.agencyId, authorId: caller.userId, body: noteBody, visibility: name === 'close' ? 'shared' : 'agency' })
        .returning({ id: notes.id })
    // The note's event and the transition's, in one statement.
    await writeAuditEvents(tx, context, [
      ...(note !== undefined ? [{ action: 'note.create' as const, outcome: 'success' as const, referralId, target: { type: 'note' as const, id: note.id } }] : []),
      { action: transition.audit, outcome: 'success', referralId, target: { type: 'share', id: shareId }, recipientAgencyId: share.agencyId }
    ])
    await writeOutbox(tx, [{ type: transition.outbox, payload: { referralId, shareId, agencyId: share.agencyId } }])
    return toShare(row)
  })
}
