import { sql } from 'drizzle-orm'
import {
  bigint, boolean, check, customType, index, integer, jsonb, pgEnum, pgSequence, pgTable, primaryKey, text, timestamp, uniqueIndex, uuid
} from 'drizzle-orm/pg-core'
import {
  agencyKinds, agencyServices, agencyStatuses, ageGroups, auditActions, auditOutcomes, auditTargetTypes, consentBases,
  deliveryStatuses, notificationTypes, noteVisibilities, outboxTypes, purposes, referralStatuses, roles, shareOutcomes, shareScopes, shareStatuses, urgencies,
  userStatuses, webhookStatuses
} from './constants.ts'
import type { ReferralCircumstances, ReferralConsent, ReferralContact, ReferralIdentity, ReferralSummary } from './api.ts'

export const agencyKind = pgEnum('agency_kind', agencyKinds)
export const agencyService = pgEnum('agency_service', agencyServices)
export const agencyStatus = pgEnum('agency_status', agencyStatuses)
export const userStatus = pgEnum('user_status', userStatuses)
export const role = pgEnum('role', roles)
export const auditAction = pgEnum('audit_action', auditActions)
export const auditOutcome = pgEnum('audit_outcome', auditOutcomes)
export const auditTargetType = pgEnum('audit_target_type', auditTargetTypes)
export const purpose = pgEnum('purpose', purposes)
export const referralStatus = pgEnum('referral_status', referralStatuses)
export const urgency = pgEnum('urgency', urgencies)
export const ageGroup = pgEnum('age_group', ageGroups)
export const consentBasis = pgEnum('consent_basis', consentBases)
export const shareStatus = pgEnum('share_status', shareStatuses)
export const shareScope = pgEnum('share_scope', shareScopes)
export const shareOutcome = pgEnum('share_outcome', shareOutcomes)
export const noteVisibility = pgEnum('note_visibility', noteVisibilities)
export const eventType = pgEnum('event_type', outboxTypes)
export const notificationType = pgEnum('notification_type', notificationTypes)
export const webhookStatus = pgEnum('webhook_status', webhookStatuses)
export const deliveryStatus = pgEnum('delivery_status', deliveryStatuses)

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
  // The sealer walks events in (xid, seq) order below its horizon.
  index('audit_events_xid_idx').on(t.xid, t.seq),
  index('audit_events_referral_idx').on(t.referralId, t.seq),
  // The auditors' filters and an agency auditor's scope (events by its users), newest first by seq.
  index('audit_events_actor_agency_idx').on(t.actorAgencyId, t.seq),
  index('audit_events_actor_user_idx').on(t.actorUserId, t.seq),
  // from/to: occurred_at rises with insertion order, so a BRIN index is tiny and nearly free to keep.
  index('audit_events_occurred_at_idx').using('brin', t.occurredAt),
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
  type: eventType('type').notNull(),
  payload: jsonb('payload').$type<{ referralId: string, shareId: string | null, agencyId: string }>().notNull(),
  createdAt: createdAt(),
  /** When the relay last handed the message to the queue (it hands it again if it is not processed in time). */
  relayedAt: timestamp('relayed_at', { withTimezone: true, mode: 'date' }),
  /** When the fan-out finished: the message's work is recorded in the database. */
  processedAt: timestamp('processed_at', { withTimezone: true, mode: 'date' })
}, (t) => [
  index('outbox_unprocessed_idx').on(t.seq).where(sql`processed_at is null`)
])

/**
 * Human references HVN-<year>-<6 digits>, numbered from one sequence so concurrent creates never
 * collide and never wait for each other. The number does not restart each year; the sequence stops
 * at 999999 (decades at UK volumes) rather than wrap into a duplicate.
 */
export const referralReferenceSeq = pgSequence('referral_reference_seq', { startWith: 1, maxValue: 999_999 })

/**
 * A potential victim, recorded by one origin agency. The four field groups of the design are kept
 * apart (summary, identity, contact, circumstances) so a view is a choice of groups; the columns
 * beside them are what lists and rules filter on.
 */
export const referrals = pgTable('referrals', {
  id: uuid('id').primaryKey().defaultRandom(),
  reference: text('reference').notNull()
    .default(sql`'HVN-' || to_char(now() at time zone 'UTC', 'YYYY') || '-' || lpad(nextval('referral_reference_seq')::text, 6, '0')`),
  status: referralStatus('status').notNull().default('open'),
  urgency: urgency('urgency').notNull(),
  needs: agencyService('needs').array().notNull().default(sql`'{}'`),
  ageGroup: ageGroup('age_group').notNull(),
  consentBasis: consentBasis('consent_basis').notNull(),
  summary: jsonb('summary').$type<ReferralSummary>().notNull(),
  identity: jsonb('identity').$type<ReferralIdentity>(),
  contact: jsonb('contact').$type<ReferralContact>(),
  circumstances: jsonb('circumstances').$type<ReferralCircumstances>(),
  consent: jsonb('consent').$type<ReferralConsent>().notNull(),
  originAgencyId: uuid('origin_agency_id').notNull().references(() => agencies.id),
  createdBy: uuid('created_by').notNull().references(() => users.id),
  version: integer('version').notNull().default(1),
  closedOutcome: shareOutcome('closed_outcome'),
  closedAt: timestamp('closed_at', { withTimezone: true, mode: 'date', precision: 3 }),
  createdAt: createdAt(),
  updatedAt: updatedAt()
}, (t) => [
  uniqueIndex('referrals_reference_idx').on(t.reference),
  index('referrals_origin_idx').on(t.originAgencyId, t.createdAt, t.id),
  check('referrals_duty_to_notify_anonymous', sql`${t.consentBasis} <> 'duty_to_notify' or (${t.identity} is null and ${t.contact} is null)`)
])

/** A hand-over of a referral to another agency (state machine in shares.ts). */
export const shares = pgTable('shares', {
  id: uuid('id').primaryKey().defaultRandom(),
  referralId: uuid('referral_id').notNull().references(() => referrals.id),
  agencyId: uuid('agency_id').notNull().references(() => agencies.id),
  status: shareStatus('status').notNull().default('pending'),
  scopes: shareScope('scopes').array().notNull().default(sql`'{}'`),
  message: text('message'),
  respondBy: timestamp('respond_by', { withTimezone: true, mode: 'date', precision: 3 }).notNull(),
  createdBy: uuid('created_by').notNull().references(() => users.id),
  decidedAt: timestamp('decided_at', { withTimezone: true, mode: 'date', precision: 3 }),
  decidedBy: uuid('decided_by').references(() => users.id),
  declineReason: text('decline_reason'),
  outcome: shareOutcome('outcome'),
  /** When the sweeper reminded the recipient; null until then. */
  remindedAt: timestamp('reminded_at', { withTimezone: true, mode: 'date', precision: 3 }),
  createdAt: createdAt(),
  updatedAt: updatedAt()
}, (t) => [
  index('shares_referral_idx').on(t.referralId),
  index('shares_agency_idx').on(t.agencyId, t.status),
  // At most one pending-or-accepted share per (referral, agency): a second is a 409.
  uniqueIndex('shares_one_active_idx').on(t.referralId, t.agencyId).where(sql`status in ('pending', 'accepted')`),
  index('shares_pending_deadline_idx').on(t.respondBy).where(sql`status = 'pending'`)
])

export const notes = pgTable('notes', {
  id: uuid('id').primaryKey().defaultRandom(),
  referralId: uuid('referral_id').notNull().references(() => referrals.id),
  agencyId: uuid('agency_id').notNull().references(() => agencies.id),
  authorId: uuid('author_id').notNull().references(() => users.id),
  body: text('body').notNull(),
  visibility: noteVisibility('visibility').notNull(),
  createdAt: createdAt()
}, (t) => [
  index('notes_referral_idx').on(t.referralId, t.createdAt)
])

/**
 * Idempotency keys of POST /v1/referrals, per user: the body's hash tells a repeat (same body:
 * the first referral again) from a misuse (another body: 422).
 */
export const idempotencyKeys = pgTable('idempotency_keys', {
  userId: uuid('user_id').notNull().references(() => users.id),
  key: text('key').notNull(),
  requestHash: text('request_hash').notNull(),
  referralId: uuid('referral_id').notNull(),
  createdAt: createdAt()
}, (t) => [
  primaryKey({ columns: [t.userId, t.key] })
])

/**
 * The audit chain, append-only and apart from the events it seals: `position` is the order of the
 * chain (the seal order, commit order in practice), `eventHash` the SHA-256 of the event's canonical
 * bytes, `chainHash` = SHA-256(previous chainHash ‖ eventHash). `horizon` is the snapshot xmin the
 * sealer worked below (no transaction that could still add an older event was in flight).
 */
export const auditSeals = pgTable('audit_seals', {
  position: bigint('position', { mode: 'number' }).primaryKey(),
  eventId: uuid('event_id').notNull(),
  eventHash: text('event_hash').notNull(),
  chainHash: text('chain_hash').notNull(),
  horizon: xid8('horizon').notNull(),
  sealedAt: timestamp('sealed_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow()
}, (t) => [
  uniqueIndex('audit_seals_event_idx').on(t.eventId)
])

/** Signed checkpoints over the chain: Ed25519 over (size, head hash, time). Append-only. */
export const auditCheckpoints = pgTable('audit_checkpoints', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  size: bigint('size', { mode: 'number' }).notNull(),
  headHash: text('head_hash').notNull(),
  signedAt: timestamp('signed_at', { withTimezone: true, mode: 'date', precision: 3 }).notNull(),
  signature: text('signature').notNull(),
  publicKey: text('public_key').notNull()
})

/**
 * In-app notifications, one per user who must act. `sourceId` is what caused it (an outbox message,
 * or a reminder's share), so a re-run of the fan-out creates nothing twice. References and ids only.
 */
export const notifications = pgTable('notifications', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id),
  sourceId: uuid('source_id').notNull(),
  type: notificationType('type').notNull(),
  referralId: uuid('referral_id'),
  shareId: uuid('share_id'),
  reference: text('reference'),
  createdAt: createdAt(),
  readAt: timestamp('read_at', { withTimezone: true, mode: 'date', precision: 3 })
}, (t) => [
  uniqueIndex('notifications_source_user_idx').on(t.sourceId, t.userId),
  index('notifications_user_idx').on(t.userId, t.createdAt, t.id)
])

/** An agency's webhook endpoint. The secret signs deliveries (HMAC-SHA256), so it is kept, and shown once. */
export const webhooks = pgTable('webhooks', {
  id: uuid('id').primaryKey().defaultRandom(),
  agencyId: uuid('agency_id').notNull().references(() => agencies.id),
  url: text('url').notNull(),
  events: eventType('events').array().notNull(),
  secret: text('secret').notNull(),
  status: webhookStatus('status').notNull().default('active'),
  consecutiveFailures: integer('consecutive_failures').notNull().default(0),
  createdBy: uuid('created_by').notNull().references(() => users.id),
  createdAt: createdAt(),
  deletedAt: timestamp('deleted_at', { withTimezone: true, mode: 'date', precision: 3 })
}, (t) => [
  index('webhooks_agency_idx').on(t.agencyId)
])

/**
 * One event to one endpoint. `eventId` is the outbox message's id: the `Haven-Event-Id` the receiver
 * dedupes on, the same on every retry.
 */
export const webhookDeliveries = pgTable('webhook_deliveries', {
  id: uuid('id').primaryKey().defaultRandom(),
  webhookId: uuid('webhook_id').notNull().references(() => webhooks.id),
  eventId: uuid('event_id').notNull(),
  type: eventType('type').notNull(),
  status: deliveryStatus('status').notNull().default('pending'),
  attempts: integer('attempts').notNull().default(0),
  /** Bumped by each manual retry, so the retry is a new queue job. */
  generation: integer('generation').notNull().default(0),
  lastStatusCode: integer('last_status_code'),
  lastError: text('last_error'),
  createdAt: createdAt(),
  lastAttemptAt: timestamp('last_attempt_at', { withTimezone: true, mode: 'date', precision: 3 }),
  deliveredAt: timestamp('delivered_at', { withTimezone: true, mode: 'date', precision: 3 })
}, (t) => [
  uniqueIndex('webhook_deliveries_event_idx').on(t.webhookId, t.eventId),
  index('webhook_deliveries_webhook_idx').on(t.webhookId, t.createdAt, t.id),
  // The sweeper's look for pending deliveries to hand over again, every few seconds: without it, a
  // scan of every delivery ever made (330 ms at 1,000,000; 0.3 ms with it).
  index('webhook_deliveries_pending_idx').on(sql`coalesce(${t.lastAttemptAt}, ${t.createdAt})`).where(sql`status = 'pending'`)
])

/** Emails sent to an agency's inbox, one per (event, agency): a retried job sends nothing twice. */
export const emailDeliveries = pgTable('email_deliveries', {
  eventId: uuid('event_id').notNull(),
  agencyId: uuid('agency_id').notNull().references(() => agencies.id),
  status: deliveryStatus('status').notNull().default('pending'),
  attempts: integer('attempts').notNull().default(0),
  lastError: text('last_error'),
  createdAt: createdAt(),
  sentAt: timestamp('sent_at', { withTimezone: true, mode: 'date', precision: 3 })
}, (t) => [
  primaryKey({ columns: [t.eventId, t.agencyId] }),
  // As webhook_deliveries_pending_idx (120 ms at 1,000,000 emails; 0.2 ms with it).
  index('email_deliveries_pending_idx').on(t.createdAt).where(sql`status = 'pending'`)
])
