/**
 * Renders a referral for one caller's view (see referrals.policy.ts). Each view is built from the
 * groups it may show, field by field: nothing reaches a recipient by being left in.
 */
import type { Referral } from '@haven/schema'
import type { Access } from './referrals.policy.ts'
import { type ReferralRow, type ShareRow, toShare } from './referrals.queries.ts'

export function renderReferral (row: ReferralRow, shares: readonly ShareRow[], access: Exclude<Access, { view: 'none' }>): Referral {
  const triage: Referral = {
    id: row.id,
    reference: row.reference,
    status: row.status,
    urgency: row.urgency,
    needs: row.needs,
    originAgencyId: row.originAgencyId,
    createdAt: row.createdAt.toISOString(),
    subject: { ...row.summary.subject },
    exploitation: { ...row.summary.exploitation },
    shares: []
  }
  if (access.view !== 'origin') {
    const scopes = access.view === 'scoped' ? access.share.scopes : []
    return {
      ...triage,
      subject: {
        ...triage.subject,
        ...(scopes.includes('identity') ? row.identity : {}),
        ...(scopes.includes('contact') && row.contact !== null ? { contact: row.contact } : {})
      },
      exploitation: { ...triage.exploitation, ...(scopes.includes('circumstances') ? row.circumstances : {}) },
      shares: [toShare(access.share)]
    }
  }
  return {
    ...triage,
    createdBy: row.createdBy,
    updatedAt: row.updatedAt.toISOString(),
    version: row.version,
    subject: { ...triage.subject, ...row.identity, ...(row.contact !== null ? { contact: row.contact } : {}) },
    exploitation: { ...triage.exploitation, ...row.circumstances },
    consent: row.consent,
    closedAt: row.closedAt?.toISOString() ?? null,
    closedOutcome: row.closedOutcome,
    shares: shares.map(toShare)
  }
}

export const etagOf = (row: Pick<ReferralRow, 'version'>) => `"${row.version}"`
