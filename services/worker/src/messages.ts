/**
 * What every channel says about an event: references, urgency and links only. The webhook body is
 * the contract's `{id, type, occurredAt, data}`; the status in it is the share's status the event
 * produced, fixed by its type, so a retried delivery sends the same bytes' meaning.
 */
import type { OutboxType, Urgency } from '@haven/schema'

export const statusAfter: Record<OutboxType, string> = {
  'share.created': 'pending',
  'share.reminder': 'pending',
  'share.accepted': 'accepted',
  'share.declined': 'declined',
  'share.withdrawn': 'withdrawn',
  'share.closed': 'closed',
  'share.expired': 'expired',
  'referral.closed': 'closed'
}

const headlines: Record<OutboxType, string> = {
  'share.created': 'A referral has been shared with your agency',
  'share.reminder': 'Reminder: a referral is waiting for your answer',
  'share.accepted': 'Your referral was accepted',
  'share.declined': 'Your referral was declined',
  'share.withdrawn': 'A referral shared with you was withdrawn',
  'share.closed': 'An outcome was reported on your referral',
  'share.expired': 'Nobody answered your referral in time',
  'referral.closed': 'A referral was closed'
}

export interface EventFacts {
  eventId: string
  type: OutboxType
  occurredAt: Date
  referralId: string
  reference: string
  urgency: Urgency
  shareId: string | null
  agencyId: string
}

export const referralLink = (publicUrl: string, referralId: string) => `${publicUrl.replace(/\/$/, '')}/referrals/${referralId}`

export function emailFor (facts: EventFacts, publicUrl: string) {
  const headline = headlines[facts.type]
  return {
    subject: `[Haven] ${headline}: ${facts.reference} (${facts.urgency})`,
    text: [
      `${headline}.`,
      '',
      `Reference: ${facts.reference}`,
      `Urgency: ${facts.urgency}`,
      '',
      `Sign in to Haven to see it: ${referralLink(publicUrl, facts.referralId)}`,
      '',
      'This message holds no personal details by design. Do not reply to it.'
    ].join('\n')
  }
}

export function webhookBody (facts: EventFacts) {
  return {
    id: facts.eventId,
    type: facts.type,
    occurredAt: facts.occurredAt.toISOString(),
    data: { referralId: facts.referralId, reference: facts.reference, shareId: facts.shareId, agencyId: facts.agencyId, status: statusAfter[facts.type] }
  }
}
