/**
 * The enums and names both services share. A value here is part of the public contract
 * (DESIGN.md section 2) or of the database: never rename one without a migration.
 */

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
  'agency.create', 'agency.update', 'user.create', 'user.update',
  'referral.create', 'referral.read', 'referral.list', 'referral.update', 'referral.close',
  'share.create', 'share.accept', 'share.decline', 'share.withdraw', 'share.close', 'share.expire',
  'note.create', 'timeline.read', 'webhook.create', 'webhook.delete',
  'audit.query', 'audit.export', 'audit.verify'
] as const
export type AuditAction = (typeof auditActions)[number]

export const auditOutcomes = ['success', 'denied', 'error'] as const
export type AuditOutcome = (typeof auditOutcomes)[number]

/** What an audit event's `target` may point at. */
export const auditTargetTypes = ['user', 'agency', 'referral', 'share', 'note', 'webhook', 'audit', 'session'] as const
export type AuditTargetType = (typeof auditTargetTypes)[number]
