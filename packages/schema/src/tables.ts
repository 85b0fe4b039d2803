import { sql } from 'drizzle-orm'
import {
  bigint, boolean, customType, index, jsonb, pgEnum, pgTable, text, timestamp, uniqueIndex, uuid
} from 'drizzle-orm/pg-core'
import {
  agencyKinds, agencyServices, agencyStatuses, auditActions, auditOutcomes, auditTargetTypes, purposes, roles, userStatuses
} from './constants.ts'

export const agencyKind = pgEnum('agency_kind', agencyKinds)
export const agencyService = pgEnum('agency_service', agencyServices)
export const agencyStatus = pgEnum('agency_status', agencyStatuses)
export const userStatus = pgEnum('user_status', userStatuses)
export const role = pgEnum('role', roles)
export const auditAction = pgEnum('audit_action', auditActions)
export const auditOutcome = pgEnum('audit_outcome', auditOutcomes)
export const auditTargetType = pgEnum('audit_target_type', auditTargetTypes)
export const purpose = pgEnum('purpose', purposes)

/** `xid8`: the id of the transaction that wrote a row; the audit sealer's commit-order horizon. */
const xid8 = customType<{ data: string, driverData: string }>({ dataType: () => 'xid8' })

/**
 * Millisecond precision, like a JS Date: a timestamp read back and sent in a keyset cursor compares
 * exactly equal to the stored one.
 */
const createdAt = () => timestamp('created_at', { withTimezone: true, mode: 'date', precision: 3 }).notNull().defaultNow()
const updatedAt = () => timestamp('updated_at', { withTimezone: true, mode: 'date', precision: 3 }).notNull().defaultNow()

export const agencies = pgTable('agencies', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull(),
  kind: agencyKind('kind').notNull(),
  region: text('region').notNull(),
  contactEmail: text('contact_email').notNull(),
  services: agencyService('services').array().notNull().default(sql`'{}'`),
  acceptsReferrals: boolean('accepts_referrals').notNull().default(true),
  status: agencyStatus('status').notNull().default('active'),
  createdAt: createdAt(),
  updatedAt: updatedAt()
}, (t) => [
  index('agencies_name_idx').on(t.name, t.id)
])

export const users = pgTable('users', {
  id: uuid('id').primaryKey().defaultRandom(),
  agencyId: uuid('agency_id').notNull().references(() => agencies.id),
  /** Stored as given; uniqueness is case-insensitive through the lower(email) index. */
  email: text('email').notNull(),
  name: text('name').notNull(),
  roles: role('roles').array().notNull(),
  status: userStatus('status').notNull().default('active'),
  passwordHash: text('password_hash').notNull(),
  createdAt: createdAt(),
  updatedAt: updatedAt()
}, (t) => [
  uniqueIndex('users_email_lower_idx').on(sql`lower(${t.email})`),
  index('users_agency_idx').on(t.agencyId, t.createdAt, t.id)
])

/**
 * Refresh tokens, stored as SHA-256 hashes. Each sign-in starts a family; each refresh spends
 * one token and issues its successor in the same family. Presenting a spent token again means
 * it was stolen or replayed: the whole family is revoked.
 */
export const refreshTokens = pgTable('refresh_tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  familyId: uuid('family_id').notNull(),
  userId: uuid('user_id').notNull().references(() => users.id),
  tokenHash: text('token_hash').notNull(),
  createdAt: createdAt(),
  expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  spentAt: timestamp('spent_at', { withTimezone: true, mode: 'date' }),
  revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' })
}, (t) => [
  uniqueIndex('refresh_tokens_hash_idx').on(t.tokenHash),
  index('refresh_tokens_family_idx').on(t.familyId)
])

/**
 * The audit trail. Rows hold references (ids, codes), never personal data. `seq` orders events
 * for keyset pagination; `xid` records the writing transaction so the sealer can seal in commit
 * order (see shared notes: the commit-order trap). No foreign keys: an event must outlive
 * whatever it refers to.
 */
export const auditEvents = pgTable('audit_events', {
  id: uuid('id').primaryKey().defaultRandom(),
  seq: bigint('seq', { mode: 'number' }).generatedAlwaysAsIdentity().notNull(),
  xid: xid8('xid').notNull().default(sql`pg_current_xact_id()`),
  occurredAt: timestamp('occurred_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  actorUserId: uuid('actor_user_id'),
  actorAgencyId: uuid('actor_agency_id'),
  actorRoles: role('actor_roles').array().notNull().default(sql`'{}'`),
  action: auditAction('action').notNull(),
  outcome: auditOutcome('outcome').notNull(),
  referralId: uuid('referral_id'),
  targetType: auditTargetType('target_type'),
  targetId: uuid('target_id'),
  recipientAgencyId: uuid('recipient_agency_id'),
  purpose: purpose('purpose').notNull().default('case_management'),
  requestId: text('request_id'),
  ip: text('ip')
}, (t) => [
  uniqueIndex('audit_events_seq_idx').on(t.seq),
  index('audit_events_referral_idx').on(t.referralId, t.seq),
  // Sign-in throttling counts recent failures per account and per address from the trail itself.
  index('audit_events_login_failed_target_idx').on(t.targetId, t.occurredAt).where(sql`action = 'auth.login_failed'`),
  index('audit_events_login_failed_ip_idx').on(t.ip, t.occurredAt).where(sql`action = 'auth.login_failed'`)
])

/**
 * The transactional outbox: a state change writes its row here in the same transaction, and the
 * worker relays it to the queues. Payloads hold ids only.
 */
export const outbox = pgTable('outbox', {
  id: uuid('id').primaryKey().defaultRandom(),
  seq: bigint('seq', { mode: 'number' }).generatedAlwaysAsIdentity().notNull(),
  type: text('type').notNull(),
  payload: jsonb('payload').$type<Record<string, string | null>>().notNull(),
  createdAt: createdAt(),
  relayedAt: timestamp('relayed_at', { withTimezone: true, mode: 'date' })
}, (t) => [
  index('outbox_unrelayed_idx').on(t.seq).where(sql`relayed_at is null`)
])
