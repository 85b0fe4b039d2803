/**
 * Referrals: create, read, list, update and close. Each runs in one transaction that carries its
 * audit event (reads included, written before the data is returned) and, for state changes the
 * worker must announce, its outbox row.
 */
import { createHash, randomUUID } from 'node:crypto'
import {
  agencies, type AuditContext, type Db, idempotencyKeys, notes, type ReferralClose, type ReferralInput,
  type ReferralListQuery, type ReferralPatch, ReferralInput as ReferralInputSchema, referrals, shares, writeAuditEvent,
  writeAuditEvents, writeOutbox
} from '@haven/schema'
import { and, eq, inArray, sql } from 'drizzle-orm'
import { badRequest, conflict, forbidden, HttpProblem, type ProblemDetail, unprocessable } from '../errors.ts'
import type { Caller } from '../plugins/auth.ts'
import { bodyErrors } from '../validation.ts'
import { consentCovers, legalBasisProblems } from './legal-basis.ts'
import { requireContentRole, withReferral } from './referral-access.ts'
import { isReferrer, mayManage } from './referrals.policy.ts'
import { insertReferral, listReferrals, loadReferral, toGroups, toInput } from './referrals.queries.ts'
import { etagOf, renderReferral } from './referrals.views.ts'

/** JSON with object keys sorted, so the same body always hashes the same. */
const canonicalJson = (value: unknown): string => JSON.stringify(value, (_key, v: unknown) =>
  v !== null && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
    : v)

/** RFC 7396 JSON merge patch: objects merge, null removes, anything else replaces. */
function mergePatch (target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch
  const result: Record<string, unknown> = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target as Record<string, unknown> } : {}
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key]
    else result[key] = mergePatch(result[key], value)
  }
  return result
}

/** The rules a referral's content must keep, on create and on every update. */
async function checkReferralRules (db: Db, input: ReferralInput) {
  const problems: ProblemDetail[] = legalBasisProblems(input)
  const allowed = input.consent.sharingAllowedWith
  if (Array.isArray(allowed)) {
    const known = await db.select({ id: agencies.id }).from(agencies).where(inArray(agencies.id, allowed))
    for (const id of allowed) {
      if (!known.some((agency) => agency.id === id)) problems.push({ path: '/consent/sharingAllowedWith', message: `No agency has the id ${id}.` })
    }
  }
  if (problems.length > 0) throw unprocessable(problems.map((p) => p.message).join(' '), problems.map((p) => ({ ...p, path: `/body${p.path}` })))
}

export async function createReferral (db: Db, caller: Caller, context: AuditContext, input: ReferralInput, idempotencyKey: string | undefined) {
  await requireContentRole(db, caller, context, 'referral.create', null)
  if (!isReferrer(caller)) {
    await writeAuditEvent(db, context, { action: 'referral.create', outcome: 'denied' })
    throw forbidden('Only referrers create referrals.')
  }
  await checkReferralRules(db, input)
  return await db.transaction(async (tx) => {
    const id = randomUUID()
    if (idempotencyKey !== undefined) {
      const requestHash = createHash('sha256').update(canonicalJson(input)).digest('hex')
      // A concurrent request with the same key waits here for the first to commit, then sees its row.
      const [claimed] = await tx.insert(idempotencyKeys).values({ userId: caller.userId, key: idempotencyKey, requestHash, referralId: id })
        .onConflictDoNothing().returning({ referralId: idempotencyKeys.referralId })
      if (claimed === undefined) {
        const [first] = await tx.select().from(idempotencyKeys).where(and(eq(idempotencyKeys.userId, caller.userId), eq(idempotencyKeys.key, idempotencyKey)))
        if (first === undefined || first.requestHash !== requestHash) {
          throw unprocessable('This Idempotency-Key was already used with a different body. Use a new key for a new referral.')
        }
        const loaded = await loadReferral(tx, first.referralId)
        if (loaded === undefined) throw conflict('The referral this key created is gone.')
        await writeAuditEvent(tx, context, { action: 'referral.read', outcome: 'success', referralId: first.referralId, target: { type: 'referral', id: first.referralId } })
        return { referral: renderReferral(loaded.referral, loaded.shares, { view: 'origin' }), etag: etagOf(loaded.referral) }
      }
    }
    const row = await insertReferral(tx, { id, ...toGroups(input), originAgencyId: caller.agencyId, createdBy: caller.userId })
    await writeAuditEvent(tx, context, { action: 'referral.create', outcome: 'success', referralId: id, target: { type: 'referral', id } })
    return { referral: renderReferral(row, [], { view: 'origin' }), etag: etagOf(row) }
  })
}

export async function readReferral (db: Db, caller: Caller, context: AuditContext, id: string) {
  return await withReferral(db, caller, context, { id, action: 'referral.read' }, async (tx, { referral, shares: all, access }) => {
    await writeAuditEvent(tx, context, { action: 'referral.read', outcome: 'success', referralId: id, target: { type: 'referral', id } })
    return { referral: renderReferral(referral, all, access), etag: access.view === 'origin' ? etagOf(referral) : undefined }
  })
}

/** Summaries only; the audit trail records each referral the page returned. */
export async function listReferralSummaries (db: Db, caller: Caller, context: AuditContext, query: ReferralListQuery) {
  await requireContentRole(db, caller, context, 'referral.list', null)
  // A read: no transaction, as in withReferral; the page's audit events are one statement.
  const page = await listReferrals(db, caller.agencyId, query)
  await writeAuditEvents(db, context, page.items.length === 0
    ? [{ action: 'referral.list', outcome: 'success' }]
    : page.items.map((item) => ({ action: 'referral.list' as const, outcome: 'success' as const, referralId: item.id, target: { type: 'referral' as const, id: item.id } })))
  return page
}

/** `If-Match` as a version number; `*` matches any. */
function parseIfMatch (header: string | undefined): number | '*' {
  if (header === undefined) throw new HttpProblem(428, 'precondition-required', 'Precondition required', 'Send If-Match with the ETag from your last read, so you do not overwrite someone else\'s change.')
  if (header.trim() === '*') return '*'
  const match = /^(?:W\/)?"(\d+)"$/.exec(header.trim())
  return match === null ? -1 : Number(match[1])
}

export async function updateReferral (db: Db, caller: Caller, context: AuditContext, id: string, patch: ReferralPatch, ifMatch: string | undefined) {
  return await withReferral(db, caller, context, { id, action: 'referral.update', lock: 'update' }, async (tx, { referral, shares: all, access }) => {
    if (!mayManage(access)) throw forbidden('Only the origin agency edits a referral.')
    // After the access check: who may not edit learns nothing from 428 vs 412.
    const expected = parseIfMatch(ifMatch)
    if (expected !== '*' && expected !== referral.version) {
      throw new HttpProblem(412, 'precondition-failed', 'Precondition failed', 'The referral changed since you read it. Read it again and reapply your change.')
    }
    if (referral.status === 'closed') throw conflict('The referral is closed and can no longer be edited.')
    const merged = mergePatch(toInput(referral), patch)
    const errors = bodyErrors(ReferralInputSchema, merged)
    if (errors.length > 0) throw badRequest('The referral, with your change applied, does not match the schema: see errors.', errors)
    const input = merged as ReferralInput
    await checkReferralRules(tx, input)
    const uncovered = all.filter((share) => (share.status === 'pending' || share.status === 'accepted') && !consentCovers(input.consent, share.agencyId))
    if (uncovered.length > 0) {
      throw unprocessable('The new consent does not cover agencies this referral is shared with. Withdraw those shares first.',
        uncovered.map((share) => ({ path: '/body/consent/sharingAllowedWith', message: `does not include agency ${share.agencyId}, which holds an active share` })))
    }
    const [row] = await tx.update(referrals).set({ ...toGroups(input), version: sql`${referrals.version} + 1`, updatedAt: sql`now()` })
      .where(eq(referrals.id, id)).returning()
    if (row === undefined) throw new Error('update returned no referral')
    await writeAuditEvent(tx, context, { action: 'referral.update', outcome: 'success', referralId: id, target: { type: 'referral', id } })
    return { referral: renderReferral(row, all, access), etag: etagOf(row) }
  })
}

/**
 * Closes a referral and withdraws its pending and accepted shares, each with its own audit event and
 * outbox row. A closing note is kept as an agency-only note of the origin, with its own `note.create`.
 */
export async function closeReferral (db: Db, caller: Caller, context: AuditContext, id: string, body: ReferralClose) {
  return await withReferral(db, caller, context, { id, action: 'referral.close', lock: 'update' }, async (tx, { referral, shares: all, access }) => {
    if (!mayManage(access)) throw forbidden('Only the origin agency closes a referral.')
    if (referral.status === 'closed') throw conflict('The referral is already closed.')
    const [row] = await tx.update(referrals).set({ status: 'closed', closedAt: sql`now()`, closedOutcome: body.outcome ?? null, version: sql`${referrals.version} + 1`, updatedAt: sql`now()` })
      .where(eq(referrals.id, id)).returning()
    if (row === undefined) throw new Error('update returned no referral')
    const withdrawn = await tx.update(shares).set({ status: 'withdrawn', updatedAt: sql`now()` })
      .where(and(eq(shares.referralId, id), inArray(shares.status, ['pending', 'accepted']))).returning()
    const [note] = body.note === undefined
      ? []
      : await tx.insert(notes).values({ referralId: id, agencyId: caller.agencyId, authorId: caller.userId, body: body.note, visibility: 'agency' }).returning({ id: notes.id })
    await writeAuditEvents(tx, context, [
      ...withdrawn.map((share) => ({ action: 'share.withdraw' as const, outcome: 'success' as const, referralId: id, target: { type: 'share' as const, id: share.id }, recipientAgencyId: share.agencyId })),
      ...(note !== undefined ? [{ action: 'note.create' as const, outcome: 'success' as const, referralId: id, target: { type: 'note' as const, id: note.id } }] : []),
      { action: 'referral.close', outcome: 'success', referralId: id, target: { type: 'referral', id } }
    ])
    await writeOutbox(tx, [
      ...withdrawn.map((share) => ({ type: 'share.withdrawn' as const, payload: { referralId: id, shareId: share.id, agencyId: share.agencyId } })),
      { type: 'referral.closed', payload: { referralId: id, shareId: null, agencyId: referral.originAgencyId } }
    ])
    const current = all.map((share) => withdrawn.find((w) => w.id === share.id) ?? share)
    return { referral: renderReferral(row, current, access), etag: etagOf(row) }
  })
}
