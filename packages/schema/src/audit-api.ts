/**
 * TypeBox schemas of the auditors' API (DESIGN.md section 2): the AuditEvent shape, its filters,
 * verification and checkpoints. Responses list their fields, like the rest of the contract.
 */
import { type Static, Type, type TSchema } from 'typebox'
import { mismatchReasons } from './audit-chain.ts'
import { auditActions, auditOutcomes, auditTargetTypes, purposes, roles } from './constants.ts'

const strict = { additionalProperties: false } as const
const StringEnum = <const Values extends string[]>(values: readonly [...Values]) => Type.Enum<Values>(values, { type: 'string' })
const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])
const Uuid = Type.String({ format: 'uuid' })
const DateTime = Type.String({ format: 'date-time' })

export const AuditEvent = Type.Object({
  id: Uuid,
  occurredAt: Type.String({ format: 'date-time', description: 'Microsecond precision, as stored and as hashed into the chain.' }),
  actor: Type.Object({ userId: Nullable(Uuid), agencyId: Nullable(Uuid), roles: Type.Array(StringEnum(roles)) }),
  action: StringEnum(auditActions),
  outcome: StringEnum(auditOutcomes),
  referralId: Nullable(Uuid),
  target: Nullable(Type.Object({ type: StringEnum(auditTargetTypes), id: Nullable(Uuid) })),
  recipientAgencyId: Nullable(Uuid),
  purpose: StringEnum(purposes),
  requestId: Nullable(Type.String()),
  ip: Nullable(Type.String()),
  sealed: Type.Boolean({ description: 'Whether the event is in the hash chain yet (the sealer runs a moment behind).' })
})
export type AuditEvent = Static<typeof AuditEvent>

export const auditEventFilters = {
  actorUserId: Type.Optional(Uuid),
  actorAgencyId: Type.Optional(Uuid),
  referralId: Type.Optional(Uuid),
  action: Type.Optional(StringEnum(auditActions)),
  outcome: Type.Optional(StringEnum(auditOutcomes)),
  from: Type.Optional(Type.String({ format: 'date-time', description: 'Events at or after this time.' })),
  to: Type.Optional(Type.String({ format: 'date-time', description: 'Events before this time.' }))
}

export const AuditEventQuery = Type.Object({
  ...auditEventFilters,
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 500 }))
}, strict)
export type AuditEventQuery = Static<typeof AuditEventQuery>
export type AuditEventFilters = Omit<AuditEventQuery, 'limit' | 'cursor'>

export const AuditExportQuery = Type.Object({
  ...auditEventFilters,
  format: Type.Optional(StringEnum(['ndjson', 'csv'] as const))
}, strict)
export type AuditExportQuery = Static<typeof AuditExportQuery>

export const AccessLogQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 500 }))
}, strict)
export type AccessLogQuery = Static<typeof AccessLogQuery>

export const AuditEventPage = Type.Object({ items: Type.Array(AuditEvent), nextCursor: Nullable(Type.String()) })

const CheckpointSummary = Type.Object({ size: Type.Integer(), signedAt: DateTime })

export const AuditVerification = Type.Object({
  ok: Type.Boolean(),
  checked: Type.Integer({ description: 'Events whose hashes were recomputed.' }),
  sealedThrough: Type.Integer({ description: 'The chain\'s length: events sealed so far.' }),
  firstMismatch: Nullable(Type.Object({
    reason: StringEnum(mismatchReasons),
    position: Nullable(Type.Integer()),
    eventId: Nullable(Uuid),
    detail: Type.String()
  })),
  checkpoints: Type.Object({ database: Nullable(CheckpointSummary), file: Nullable(CheckpointSummary) })
})
export type AuditVerification = Static<typeof AuditVerification>

export const AuditCheckpoint = Type.Object({
  size: Type.Integer(),
  headHash: Type.String({ description: 'SHA-256 chain hash at position `size`, hex.' }),
  signedAt: DateTime,
  signature: Type.String({ description: 'Ed25519 over "haven-audit-checkpoint/1\\n<size>\\n<headHash>\\n<signedAt>\\n", base64.' }),
  publicKey: Type.String({ description: 'The signer\'s Ed25519 public key, SPKI DER, base64.' })
})
export type AuditCheckpoint = Static<typeof AuditCheckpoint>
