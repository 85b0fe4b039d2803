/**
 * Who sees what of a referral, and who may do what to it (DESIGN.md section 1). Every referral route
 * asks here; nothing else decides access.
 *
 * | caller's agency                          | view                                           |
 * | origin                                   | origin: everything, all shares                 |
 * | recipient, share pending                 | triage: reference, urgency, summary, its share |
 * | recipient, share accepted or closed      | scoped: summary + the share's scopes, its share|
 * | recipient declined/withdrawn/expired; any other | none: 404                               |
 *
 * Only referrers and caseworkers see case content; every other role is refused (403) before any
 * referral is looked at.
 */
import { contentRoles } from '@haven/schema'
import type { Caller } from '../plugins/auth.ts'
import { consentCovers } from './legal-basis.ts'
import type { ReferralRow, ShareRow } from './referrals.queries.ts'

export type Access =
  | { view: 'origin' }
  | { view: 'triage', share: ShareRow }
  | { view: 'scoped', share: ShareRow }
  | { view: 'none' }

export const hasContentRole = (caller: Caller) => caller.roles.some((role) => contentRoles.includes(role))
export const isReferrer = (caller: Caller) => caller.roles.includes('referrer')
export const isCaseworker = (caller: Caller) => caller.roles.includes('caseworker')

/**
 * The caller's view of a referral. An agency with several shares of one referral over time (a
 * closed one, then a new one) is seen through the current one: accepted, else pending, else the
 * latest closed. A closed share keeps its read-only view only while the person's consent still
 * covers that agency: narrowing consent (or upgrading an anonymous record to consent) ends it.
 * (Active shares cannot be left uncovered: an update that would do so is refused.)
 */
export function accessOf (caller: Caller, referral: Pick<ReferralRow, 'originAgencyId' | 'consent'>, shares: readonly ShareRow[]): Access {
  if (referral.originAgencyId === caller.agencyId) return { view: 'origin' }
  const own = shares.filter((share) => share.agencyId === caller.agencyId)
  const accepted = own.find((share) => share.status === 'accepted')
  if (accepted !== undefined) return { view: 'scoped', share: accepted }
  const pending = own.find((share) => share.status === 'pending')
  if (pending !== undefined) return { view: 'triage', share: pending }
  const closed = own.filter((share) => share.status === 'closed').sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0]
  if (closed !== undefined && consentCovers(referral.consent, caller.agencyId)) return { view: 'scoped', share: closed }
  return { view: 'none' }
}

/** Edit, close, share and withdraw: the origin agency's referrers and caseworkers. */
export const mayManage = (access: Access) => access.view === 'origin'

/** The shares a caller may see: all of them at the origin, its own agency's elsewhere (to act on, not to read the referral). */
export const maySeeShare = (caller: Caller, access: Access, share: Pick<ShareRow, 'agencyId'>) =>
  access.view === 'origin' || share.agencyId === caller.agencyId

/**
 * Accept, decline, and report the outcome (close): caseworkers of the agency the share is addressed
 * to. Whether the share's state allows it is the state machine's call (shares.ts), answered 409.
 */
export const mayAnswer = (caller: Caller, share: Pick<ShareRow, 'agencyId'>) =>
  share.agencyId === caller.agencyId && isCaseworker(caller)

/** Write notes: the origin agency, or a recipient while its share is accepted (closed is read-only). */
export const mayWriteNotes = (access: Access) =>
  access.view === 'origin' || (access.view === 'scoped' && access.share.status === 'accepted')

/**
 * Notes a caller may read: its own agency's, and shared ones once it has more than a triage card,
 * whatever its share's scopes: DESIGN.md gives `shared` notes to every agency with current access,
 * and scopes choose among the referral's field groups, which notes are not. A writer keeps a note
 * from recipients with `agency` visibility.
 */
export const mayReadNote = (caller: Caller, access: Access, note: { agencyId: string, visibility: string }) =>
  (access.view === 'origin' || access.view === 'scoped') && (note.agencyId === caller.agencyId || note.visibility === 'shared')
