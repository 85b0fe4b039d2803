/**
 * The share state machine, as data: which transitions exist, from which states, to which state,
 * and what each one announces. The API and the worker (expiry) both apply transitions through
 * `shareTransitions`, so there is one definition of what is legal.
 *
 *   pending  → accepted | declined | withdrawn | expired
 *   accepted → closed | withdrawn
 */
import type { AuditAction, OutboxType, ShareStatus } from './constants.ts'

export interface ShareTransition {
  from: readonly ShareStatus[]
  to: ShareStatus
  audit: AuditAction
  outbox: OutboxType
}

export const shareTransitions = {
  accept: { from: ['pending'], to: 'accepted', audit: 'share.accept', outbox: 'share.accepted' },
  decline: { from: ['pending'], to: 'declined', audit: 'share.decline', outbox: 'share.declined' },
  withdraw: { from: ['pending', 'accepted'], to: 'withdrawn', audit: 'share.withdraw', outbox: 'share.withdrawn' },
  close: { from: ['accepted'], to: 'closed', audit: 'share.close', outbox: 'share.closed' },
  expire: { from: ['pending'], to: 'expired', audit: 'share.expire', outbox: 'share.expired' }
} as const satisfies Record<string, ShareTransition>

export type ShareTransitionName = keyof typeof shareTransitions

/** States in which a share still gives its agency a hand in the case; at most one per (referral, agency). */
export const activeShareStatuses = ['pending', 'accepted'] as const satisfies readonly ShareStatus[]
