import { type AuditContext, type Db, type NoteCreate, notes, writeAuditEvent } from '@haven/schema'
import { forbidden } from '../errors.ts'
import type { Caller } from '../plugins/auth.ts'
import { withReferral } from '../referrals/referral-access.ts'
import { mayWriteNotes } from '../referrals/referrals.policy.ts'
import { toNote } from './notes.queries.ts'

/**
 * A note by the origin agency or an accepted recipient. `agency` notes are read only by the writer's
 * agency; `shared` notes by every agency with current access. The body never enters the audit trail.
 */
export async function createNote (db: Db, caller: Caller, context: AuditContext, referralId: string, input: NoteCreate) {
  return await withReferral(db, caller, context, { id: referralId, action: 'note.create', lock: 'share' }, async (tx, { access }) => {
    if (!mayWriteNotes(access)) throw forbidden('Only the origin agency and agencies that accepted the referral write notes.')
    const [row] = await tx.insert(notes).values({ referralId, agencyId: caller.agencyId, authorId: caller.userId, body: input.body, visibility: input.visibility }).returning()
    if (row === undefined) throw new Error('insert returned no note')
    await writeAuditEvent(tx, context, { action: 'note.create', outcome: 'success', referralId, target: { type: 'note', id: row.id } })
    return toNote(row)
  })
}
