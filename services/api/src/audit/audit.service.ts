/**
 * The auditors' side of the audit trail. Every query of the trail is itself audited (audit.query,
 * audit.export, audit.verify), written before anything is returned; a refusal is recorded under the
 * attempted action with outcome `denied`.
 */
import { Readable } from 'node:stream'
import {
  type AccessLogQuery, type AuditCheckpoint, type AuditContext, type AuditEventFilters, type AuditEventQuery, type AuditExportQuery, type AuditVerification, type Db,
  verifyAuditChain, writeAuditEvent
} from '@haven/schema'
import type { KeyObject } from 'node:crypto'
import { refuse } from '../audit.ts'
import { badRequest, forbidden, HttpProblem, notFound } from '../errors.ts'
import { decodeCursor, defaultPageSize, toPage } from '../pagination.ts'
import type { Caller } from '../plugins/auth.ts'
import { type AuditScope, auditScopeOf, mayReadAccessLog, mayReadCheckpoints, mayVerify, readsAccessLogs } from './audit.policy.ts'
import {
  type AuditEventRow, csvColumns, lastAuditSeq, latestCheckpoint, pageAuditEvents, referralOrigin, streamAuditEvents, toAuditEvent, toCsvLine
} from './audit.queries.ts'

const trail = { type: 'audit', id: null } as const

async function requireScope (db: Db, caller: Caller, context: AuditContext, action: 'audit.query' | 'audit.export', referralId: string | undefined): Promise<AuditScope> {
  const scope = auditScopeOf(caller)
  if (scope === undefined) throw await refuse(db, context, { action, target: trail, referralId: referralId ?? null }, forbidden('Only auditors read the audit trail.'))
  return scope
}

function checkPeriod (query: { from?: string | undefined, to?: string | undefined }) {
  if (query.from !== undefined && query.to !== undefined && Date.parse(query.to) < Date.parse(query.from)) {
    throw badRequest('The period ends before it starts.', [{ path: '/querystring/to', message: 'must not be before from' }])
  }
}

const filtersOf = (query: AuditEventFilters): AuditEventFilters => ({
  actorUserId: query.actorUserId,
  actorAgencyId: query.actorAgencyId,
  referralId: query.referralId,
  action: query.action,
  outcome: query.outcome,
  from: query.from,
  to: query.to
})

const keyOf = (row: AuditEventRow) => [Number(row.seq)] as const

export async function listAuditEvents (db: Db, caller: Caller, context: AuditContext, query: AuditEventQuery) {
  const scope = await requireScope(db, caller, context, 'audit.query', query.referralId)
  checkPeriod(query)
  const before = decodeCursor(query.cursor, ['number'])
  const limit = query.limit ?? defaultPageSize
  // Reads write nothing but their audit event: no transaction (see referrals/referral-access.ts).
  const rows = await pageAuditEvents(db, scope, filtersOf(query), { beforeSeq: before?.[0], limit })
  await writeAuditEvent(db, context, { action: 'audit.query', outcome: 'success', target: trail, referralId: query.referralId ?? null })
  return toPage(rows, limit, keyOf, toAuditEvent)
}

export interface AuditExport { contentType: string, filename: string, body: Readable }

/**
 * A streamed export, oldest first, up to the last event at the time of asking. The audit event is
 * committed before the first byte goes out; the rows follow in batches, with backpressure from the
 * client, so memory stays flat whatever the size.
 */
export async function exportAuditEvents (db: Db, caller: Caller, context: AuditContext, query: AuditExportQuery): Promise<AuditExport> {
  const scope = await requireScope(db, caller, context, 'audit.export', query.referralId)
  checkPeriod(query)
  const format = query.format ?? 'ndjson'
  const filters = filtersOf(query)
  const throughSeq = await lastAuditSeq(db)
  await writeAuditEvent(db, context, { action: 'audit.export', outcome: 'success', target: trail, referralId: query.referralId ?? null })
  async function * lines () {
    if (format === 'csv') yield `${csvColumns.join(',')}\r\n`
    for await (const rows of streamAuditEvents(db, scope, filters, throughSeq)) {
      yield rows.map((row) => {
        const event = toAuditEvent(row)
        return format === 'csv' ? toCsvLine(event) : `${JSON.stringify(event)}\n`
      }).join('')
    }
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  return {
    contentType: format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
    filename: `haven-audit-${stamp}.${format}`,
    body: Readable.from(lines(), { objectMode: false })
  }
}

export async function readAccessLog (db: Db, caller: Caller, context: AuditContext, referralId: string, query: AccessLogQuery) {
  const target = { type: 'referral', id: referralId } as const
  if (!readsAccessLogs(caller)) {
    throw await refuse(db, context, { action: 'audit.query', target, referralId: null }, forbidden('Only auditors and agency admins read access logs.'))
  }
  const before = decodeCursor(query.cursor, ['number'])
  const limit = query.limit ?? defaultPageSize
  const origin = await referralOrigin(db, referralId)
  if (origin === undefined || !mayReadAccessLog(caller, origin)) {
    throw await refuse(db, context, { action: 'audit.query', target, referralId: origin !== undefined ? referralId : null }, notFound('referral'))
  }
  const rows = await pageAuditEvents(db, { kind: 'all' }, { referralId }, { beforeSeq: before?.[0], limit })
  await writeAuditEvent(db, context, { action: 'audit.query', outcome: 'success', target, referralId })
  return toPage(rows, limit, keyOf, toAuditEvent)
}

/**
 * Recomputes the whole chain (platform auditors only). The audit event is committed first: the
 * walk can take seconds, and a transaction left open that long would hold back the sealer.
 */
export async function verifyTrail (db: Db, caller: Caller, context: AuditContext, options: { publicKey: () => readonly KeyObject[], checkpointFile: string }): Promise<AuditVerification> {
  if (!mayVerify(caller)) throw await refuse(db, context, { action: 'audit.verify', target: trail }, forbidden('Only platform auditors verify the audit trail.'))
  await writeAuditEvent(db, context, { action: 'audit.verify', outcome: 'success', target: trail })
  return await verifyAuditChain(db, { publicKey: options.publicKey(), checkpointFile: options.checkpointFile })
}

export async function readLatestCheckpoint (db: Db, caller: Caller, context: AuditContext): Promise<AuditCheckpoint> {
  if (!mayReadCheckpoints(caller)) throw await refuse(db, context, { action: 'audit.query', target: trail }, forbidden('Only auditors read checkpoints.'))
  const row = await latestCheckpoint(db)
  await writeAuditEvent(db, context, { action: 'audit.query', outcome: 'success', target: trail })
  if (row === undefined) throw new HttpProblem(404, 'not-found', 'Not found', 'No checkpoint has been signed yet.')
  return { size: Number(row.size), headHash: row.head_hash, signedAt: row.signed_at, signature: row.signature, publicKey: row.public_key }
}
