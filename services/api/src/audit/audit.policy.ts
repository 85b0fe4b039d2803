/**
 * Who may read and verify the audit trail (DESIGN.md sections 1 and 2). None of these roles sees
 * case content: they see who did what to which record, by id.
 *
 * | caller                | events and export                                   | access log of a referral         |
 * | platform_auditor      | all                                                 | any referral                     |
 * | auditor               | events by its agency's users, and events on         | referrals its agency originated  |
 * |                       | referrals its agency originated                     |                                  |
 * | agency_admin          | 403                                                 | referrals its agency originated  |
 * | anyone else           | 403                                                 | 403                              |
 *
 * A referral outside the caller's reach is 404, as on the referral routes. Verification is the
 * platform auditor's; the latest checkpoint is public to every auditor (it holds hashes only).
 */
import type { Caller } from '../plugins/auth.ts'

export type AuditScope = { kind: 'all' } | { kind: 'agency', agencyId: string }

const isPlatformAuditor = (caller: Caller) => caller.roles.includes('platform_auditor')
const isAuditor = (caller: Caller) => caller.roles.includes('auditor')

/** The events the caller may query or export; undefined: none (403). */
export function auditScopeOf (caller: Caller): AuditScope | undefined {
  if (isPlatformAuditor(caller)) return { kind: 'all' }
  if (isAuditor(caller)) return { kind: 'agency', agencyId: caller.agencyId }
  return undefined
}

export const mayVerify = (caller: Caller) => isPlatformAuditor(caller)

export const mayReadCheckpoints = (caller: Caller) => isPlatformAuditor(caller) || isAuditor(caller)

/** Whether the caller's roles read access logs at all; anyone else is refused outright (403). */
export const readsAccessLogs = (caller: Caller) => isPlatformAuditor(caller) || isAuditor(caller) || caller.roles.includes('agency_admin')

/** The access log of one referral: a platform auditor's for any; an auditor's or agency admin's for its own agency's. */
export const mayReadAccessLog = (caller: Caller, referral: { originAgencyId: string }) =>
  isPlatformAuditor(caller) || (readsAccessLogs(caller) && referral.originAgencyId === caller.agencyId)
