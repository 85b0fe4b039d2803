/**
 * The one way into a referral for every referral route: the role check, the load, the caller's view,
 * and the audit of a refusal. A change (`lock` given) runs in one transaction with its own audit
 * event; a read (no `lock`) may write nothing but its audit event and runs without one (see below).
 * A refusal (403, or 404 for a referral the caller may not see) is recorded with outcome `denied`
 * under the attempted action, on its own, since the refused work has no transaction to carry it.
 */
import { type AuditAction, type AuditContext, type Db, writeAuditEvent } from '@haven/schema'
import { forbidden, HttpProblem, notFound } from '../errors.ts'
import type { Caller } from '../plugins/auth.ts'
import { type Access, accessOf, hasContentRole } from './referrals.policy.ts'
import { loadReferral, type ReferralRow, type ShareRow } from './referrals.queries.ts'

export interface ReferralAccess<A extends Access = Exclude<Access, { view: 'none' }>> {
  referral: ReferralRow
  shares: ShareRow[]
  access: A
}

export const noContentRole = () => forbidden('Your role does not see case content.')

/** Refuses (403, audited) a caller whose roles never see case content. */
export async function requireContentRole (db: Db, caller: Caller, context: AuditContext, action: AuditAction, referralId: string | null) {
  if (hasContentRole(caller)) return
  await writeAuditEvent(db, context, { action, outcome: 'denied', referralId, ...(referralId !== null ? { target: { type: 'referral', id: referralId } } : {}) })
  throw noContentRole()
}

export async function withReferral<T> (
  db: Db, caller: Caller, context: AuditContext,
  options: { id: string, action: AuditAction, lock?: 'update' | 'share' },
  work: (tx: Db, found: ReferralAccess) => Promise<T>
): Promise<T>
/**
 * With `seeOwnShares`, a recipient whose own shares have all ended (declined, withdrawn, expired)
 * still reaches `work`, which must refuse anything but acting on its own agency's share: an agency
 * answering a share it already answered learns nothing new from a 409.
 */
export async function withReferral<T> (
  db: Db, caller: Caller, context: AuditContext,
  options: { id: string, action: AuditAction, lock?: 'update' | 'share', seeOwnShares: true },
  work: (tx: Db, found: ReferralAccess<Access>) => Promise<T>
): Promise<T>
export async function withReferral<T> (
  db: Db,
  caller: Caller,
  context: AuditContext,
  options: { id: string, action: AuditAction, lock?: 'update' | 'share', seeOwnShares?: boolean },
  work: (tx: Db, found: ReferralAccess) => Promise<T>
): Promise<T> {
  await requireContentRole(db, caller, context, options.action, options.id)
  let exists = false
  const run = async (tx: Db) => {
    const loaded = await loadReferral(tx, options.id, options.lock)
    exists = loaded !== undefined
    const access = loaded === undefined ? { view: 'none' as const } : accessOf(caller, loaded.referral, loaded.shares)
    const ownShare = loaded?.shares.some((share) => share.agencyId === caller.agencyId) === true
    if (loaded === undefined || (access.view === 'none' && !(options.seeOwnShares === true && ownShare))) throw notFound('referral')
    // `none` only gets here with seeOwnShares, whose overload types `work` to expect it.
    return await work(tx, { ...loaded, access } as ReferralAccess)
  }
  try {
    // A read (no lock) writes nothing but its one audit event, and under READ COMMITTED a
    // transaction gives its statements no more consistency than running each on its own: it runs
    // without BEGIN and COMMIT, two of its five round trips. If the audit insert fails, the read
    // fails with it, so nothing is ever returned unrecorded. A change (with a lock) is one transaction.
    return await (options.lock === undefined ? run(db) : db.transaction(run))
  } catch (error) {
    if (error instanceof HttpProblem && (error.status === 403 || error.status === 404)) {
      await writeAuditEvent(db, context, {
        action: options.action,
        outcome: 'denied',
        referralId: exists ? options.id : null,
        target: { type: 'referral', id: options.id }
      })
    }
    throw error
  }
}
