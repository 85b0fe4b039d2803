/**
 * Reads of the audit trail for auditors: plain functions over a handle or transaction. Every read is
 * scoped by the caller's AuditScope in its WHERE clause. Rows are read with the chain's own column
 * list (@haven/schema `chainEventColumns`), so what an auditor sees is exactly what was hashed.
 */
import { type AuditEvent, type AuditEventFilters, chainEventColumns, type ChainEventRow, type Db, referrals, rowsOf, toChainEvent } from '@haven/schema'
import { eq, type SQL, sql } from 'drizzle-orm'
import type { AuditScope } from './audit.policy.ts'

export interface AuditEventRow extends ChainEventRow { sealed: boolean }

function conditions (scope: AuditScope, filters: AuditEventFilters): SQL[] {
  const where: SQL[] = []
  if (scope.kind === 'agency') {
    where.push(sql`(e.actor_agency_id = ${scope.agencyId}::uuid or e.referral_id in (select r.id from referrals r where r.origin_agency_id = ${scope.agencyId}::uuid))`)
  }
  if (filters.actorUserId !== undefined) where.push(sql`e.actor_user_id = ${filters.actorUserId}::uuid`)
  if (filters.actorAgencyId !== undefined) where.push(sql`e.actor_agency_id = ${filters.actorAgencyId}::uuid`)
  if (filters.referralId !== undefined) where.push(sql`e.referral_id = ${filters.referralId}::uuid`)
  if (filters.action !== undefined) where.push(sql`e.action = ${filters.action}`)
  if (filters.outcome !== undefined) where.push(sql`e.outcome = ${filters.outcome}`)
  if (filters.from !== undefined) where.push(sql`e.occurred_at >= ${filters.from}::timestamptz`)
  if (filters.to !== undefined) where.push(sql`e.occurred_at < ${filters.to}::timestamptz`)
  return where
}

const selectEvents = (where: SQL[], order: 'asc' | 'desc', limit: number) => sql`
  select ${chainEventColumns}, exists (select 1 from audit_seals s where s.event_id = e.id) as sealed
  from audit_events e
  where ${where.length > 0 ? sql.join(where, sql` and `) : sql`true`}
  order by e.seq ${sql.raw(order)}
  limit ${limit}`

/** A page of events, newest first, after the cursor's `seq`. Fetches `limit + 1` to know if there is more. */
export async function pageAuditEvents (db: Db, scope: AuditScope, filters: AuditEventFilters, options: { beforeSeq: number | undefined, limit: number }) {
  const where = conditions(scope, filters)
  if (options.beforeSeq !== undefined) where.push(sql`e.seq < ${options.beforeSeq}`)
  return await rowsOf<AuditEventRow>(db, selectEvents(where, 'desc', options.limit + 1))
}

/** The highest `seq` so far: an export ends there, so it is a snapshot of the trail as it was asked for. */
export async function lastAuditSeq (db: Db): Promise<number> {
  const [row] = await rowsOf<{ seq: string | null }>(db, sql`select max(seq)::text as seq from audit_events`)
  return Number(row?.seq ?? 0)
}

/**
 * Every event the filters match up to `throughSeq`, oldest first, in batches: one query per batch,
 * none held open between them, so an export of any size keeps memory flat and holds no transaction
 * (an open transaction would hold back the sealer's horizon).
 */
export async function * streamAuditEvents (db: Db, scope: AuditScope, filters: AuditEventFilters, throughSeq: number, batchSize = 5000): AsyncGenerator<AuditEventRow[]> {
  let afterSeq = 0
  for (;;) {
    const where = [...conditions(scope, filters), sql`e.seq > ${afterSeq}`, sql`e.seq <= ${throughSeq}`]
    const rows = await rowsOf<AuditEventRow>(db, selectEvents(where, 'asc', batchSize))
    if (rows.length > 0) yield rows
    if (rows.length < batchSize) return
    afterSeq = Number(rows[rows.length - 1]?.seq)
  }
}

export async function referralOrigin (db: Db, referralId: string) {
  const [row] = await db.select({ originAgencyId: referrals.originAgencyId }).from(referrals).where(eq(referrals.id, referralId))
  return row
}

export interface CheckpointRow { size: string, head_hash: string, signed_at: string, signature: string, public_key: string }

export async function latestCheckpoint (db: Db) {
  const [row] = await rowsOf<CheckpointRow>(db, sql`
    select size::text as size, head_hash, to_char(signed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as signed_at, signature, public_key
    from audit_checkpoints order by id desc limit 1`)
  return row
}

/** The contract's AuditEvent: explicit fields, never the row. */
export function toAuditEvent (row: AuditEventRow): AuditEvent {
  const event = toChainEvent(row)
  return {
    id: event.id,
    occurredAt: event.occurredAt,
    actor: { userId: event.actorUserId, agencyId: event.actorAgencyId, roles: event.actorRoles as AuditEvent['actor']['roles'] },
    action: event.action as AuditEvent['action'],
    outcome: event.outcome as AuditEvent['outcome'],
    referralId: event.referralId,
    target: event.targetType !== null ? { type: event.targetType as NonNullable<AuditEvent['target']>['type'], id: event.targetId } : null,
    recipientAgencyId: event.recipientAgencyId,
    purpose: event.purpose as AuditEvent['purpose'],
    requestId: event.requestId,
    ip: event.ip,
    sealed: row.sealed
  }
}

export const csvColumns = [
  'id', 'occurredAt', 'actorUserId', 'actorAgencyId', 'actorRoles', 'action', 'outcome', 'referralId', 'targetType', 'targetId',
  'recipientAgencyId', 'purpose', 'requestId', 'ip', 'sealed'
] as const

/**
 * One CSV cell (RFC 4180). A cell a spreadsheet would run as a formula (=, +, -, @ first) gets a
 * leading apostrophe: request ids come from clients.
 */
const csvCell = (value: string | null): string => {
  if (value === null) return ''
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe
}

export function toCsvLine (event: AuditEvent): string {
  return [
    event.id, event.occurredAt, event.actor.userId, event.actor.agencyId, event.actor.roles.join(' '), event.action, event.outcome,
    event.referralId, event.target?.type ?? null, event.target?.id ?? null, event.recipientAgencyId, event.purpose, event.requestId,
    event.ip, String(event.sealed)
  ].map(csvCell).join(',') + '\r\n'
}
