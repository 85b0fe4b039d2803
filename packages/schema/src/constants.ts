/**
 * The enums and names both services share. A value here is part of the public contract
 * (DESIGN.md section 2) or of the database: never rename one without a migration.
 */

/** A UUID as PostgreSQL's uuid type reads it, in either case (the API lower-cases ids it is given). */
export const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export const agencyKinds = ['police', 'local_authority', 'ngo', 'health', 'competent_authority', 'helpline', 'other'] as const
export type AgencyKind = (typeof agencyKinds)[number]

export const agencyServices = [
  'accommodation', 'medical', 'legal', 'interpreter', 'financial', 'mental_health', 'safety_planning', 'other'
] as const
export type AgencyService = (typeof agencyServices)[number]

export const agencyStatuses = ['active', 'suspended'] as const
export type AgencyStatus = (typeof agencyStatuses)[number]

export const userStatuses = ['active', 'suspended'] as const
export type UserStatus = (typeof userStatuses)[number]

export const roles = ['platform_admin', 'platform_auditor', 'agency_admin', 'auditor', 'referrer', 'caseworker'] as const
export type Role = (typeof roles)[number]

/** Roles that act across agencies. Only a platform_admin may grant them. */
export const platformRoles: readonly Role[] = ['platform_admin', 'platform_auditor']
/** The only roles that ever see case content (DESIGN.md section 1). */
export const contentRoles: readonly Role[] = ['referrer', 'caseworker']

export const purposes = ['case_management', 'safeguarding_emergency', 'investigation', 'service_delivery', 'audit'] as const
export type Purpose = (typeof purposes)[number]
export const defaultPurpose: Purpose = 'case_management'

export const auditActions = [
  'auth.login', 'auth.login_failed', 'auth.refresh', 'auth.logout', 'auth.token_reuse',
  'agency.create', 'agency.update', 'user.create', 'user.update', 'user.list',
  'referral.create', 'referral.read', 'referral.list', 'referral.update', 'referral.close',
  'share.create', 'share.accept', 'share.decline', 'share.withdraw', 'share.close', 'share.expire',
  'note.create', 'timeline.read', 'webhook.create', 'webhook.delete',
  'audit.query', 'audit.export', 'audit.verify',
  // Extensions of the contract's names: reads of an agency's webhooks and deliveries, and a manual retry.
  'webhook.list', 'delivery.list', 'delivery.retry'
] as const
export type AuditAction = (typeof auditActions)[number]

export const auditOutcomes = ['success', 'denied', 'error'] as const
export type AuditOutcome = (typeof auditOutcomes)[number]

/**
 * What an audit event's `target` may point at. `unknown_account`: a failed sign-in with an email that
 * has no account, named by a keyed hash of the email, never the email (services/api/src/auth/throttle.ts).
 */
export const auditTargetTypes = ['user', 'agency', 'referral', 'share', 'note', 'webhook', 'audit', 'session', 'notification', 'delivery', 'unknown_account'] as const
export type AuditTargetType = (typeof auditTargetTypes)[number]

// --- referrals --------------------------------------------------------------------------------

export const referralStatuses = ['open', 'closed'] as const
export type ReferralStatus = (typeof referralStatuses)[number]

export const urgencies = ['immediate', 'high', 'standard'] as const
export type Urgency = (typeof urgencies)[number]

/** Hours a recipient has to answer a share when the referrer doesn't say. */
export const defaultResponseHours: Record<Urgency, number> = { immediate: 4, high: 24, standard: 72 }

/** `unknown` is treated as a child until assessed (UK practice). */
export const ageGroups = ['adult', 'child', 'unknown'] as const
export type AgeGroup = (typeof ageGroups)[number]

export const genders = ['female', 'male', 'non_binary', 'other', 'unknown'] as const

export const exploitationTypes = ['labour', 'sexual', 'criminal', 'domestic_servitude', 'organ_removal', 'other'] as const

/** Indicator codes, modelled on the Home Office indicators of modern slavery. */
export const indicators = [
  'restricted_movement', 'no_id_documents', 'debt_bondage', 'multi_occupancy_address', 'unusual_comings_and_goings',
  'signs_of_physical_abuse', 'works_excessive_hours', 'fearful_or_withdrawn', 'no_access_to_earnings',
  'transported_to_work', 'other'
] as const

export const consentBases = ['consent', 'child_safeguarding', 'duty_to_notify'] as const
export type ConsentBasis = (typeof consentBases)[number]
export const consentMethods = ['verbal', 'written'] as const

/** The field groups a share can grant beyond the summary, which every recipient sees. */
export const shareScopes = ['identity', 'contact', 'circumstances'] as const
export type ShareScope = (typeof shareScopes)[number]

export const shareStatuses = ['pending', 'accepted', 'declined', 'withdrawn', 'expired', 'closed'] as const
export type ShareStatus = (typeof shareStatuses)[number]

export const shareOutcomes = ['supported', 'no_further_action', 'referred_on', 'lost_contact', 'support_declined'] as const
export type ShareOutcome = (typeof shareOutcomes)[number]

export const noteVisibilities = ['agency', 'shared'] as const
export type NoteVisibility = (typeof noteVisibilities)[number]

/** Outbox message types: also the webhook event types of the contract. */
export const outboxTypes = [
  'share.created', 'share.accepted', 'share.declined', 'share.withdrawn', 'share.closed', 'share.expired',
  'share.reminder', 'referral.closed'
] as const
export type OutboxType = (typeof outboxTypes)[number]

/** In-app notification types: the events, and a webhook that failed so often it was switched off. */
export const notificationTypes = [...outboxTypes, 'webhook.disabled'] as const
export type NotificationType = (typeof notificationTypes)[number]

// --- notifications ----------------------------------------------------------------------------

export const webhookStatuses = ['active', 'disabled'] as const
export type WebhookStatus = (typeof webhookStatuses)[number]

export const deliveryStatuses = ['pending', 'delivered', 'failed'] as const
export type DeliveryStatus = (typeof deliveryStatuses)[number]
