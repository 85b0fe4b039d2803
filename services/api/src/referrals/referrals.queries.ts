import {
  type Db, type ReferralInput, type ReferralListQuery, type referrals, rowsOf, type Share, type ShareStatus, type shares
} from '@haven/schema'
import { sql } from 'drizzle-orm'
import { decodeCursor, defaultPageSize, encodeCursor } from '../pagination.ts'

export type ReferralRow = typeof referrals.$inferSelect
export type ShareRow = typeof shares.$inferSelect

/** Splits a referral input into the stored field groups; an empty group is stored as null. */
export function toGroups (input: ReferralInput) {
  const { ageGroup, gender, languages, interpreterNeeded, givenName, familyName, aliases, dateOfBirth, nationality, contact } = input.subject
  const { types, area, indicators, narrative, encounteredAt } = input.exploitation
  const identity = { givenName, familyName, aliases, dateOfBirth, nationality }
  const circumstances = { indicators, narrative, encounteredAt }
  const present = <T extends object>(group: T): T | null => Object.values(group).some((v) => v !== undefined) ? JSON.parse(JSON.stringify(group)) as T : null
  return {
    ageGroup,
    urgency: input.urgency,
    needs: input.needs ?? [],
    consentBasis: input.consent.basis,
    consent: input.consent,
    summary: JSON.parse(JSON.stringify({ subject: { ageGroup, gender, languages, interpreterNeeded }, exploitation: { types, area } })),
    identity: present(identity),
    contact: contact ?? null,
    circumstances: present(circumstances)
  }
}

/** The stored groups as a referral input again: what a PATCH merges into. */
export function toInput (row: ReferralRow): ReferralInput {
  return {
    subject: { ...row.summary.subject, ...row.identity, ...(row.contact !== null ? { contact: row.contact } : {}) },
    exploitation: { ...row.summary.exploitation, ...row.circumstances },
    urgency: row.urgency,
    ...(row.needs.length > 0 ? { needs: row.needs } : {}),
    consent: row.consent
  }
}

export const toShare = (row: ShareRow): Share => ({
  id: row.id,
  referralId: row.referralId,
  agencyId: row.agencyId,
  status: row.status,
  scopes: row.scopes,
  message: row.message,
  respondBy: row.respondBy.toISOString(),
  createdAt: row.createdAt.toISOString(),
  decidedAt: row.decidedAt?.toISOString() ?? null,
  decidedBy: row.decidedBy,
  declineReason: row.declineReason,
  outcome: row.outcome
})

/** A referral row as PostgreSQL's to_json writes it (column names, ISO timestamps). */
interface ReferralJson {
  id: string
  reference: string
  status: ReferralRow['status']
  urgency: ReferralRow['urgency']
  needs: ReferralRow['needs']
  age_group: ReferralRow['ageGroup']
  consent_basis: ReferralRow['consentBasis']
  summary: ReferralRow['summary']
  identity: ReferralRow['identity']
  contact: ReferralRow['contact']
  circumstances: ReferralRow['circumstances']
  consent: ReferralRow['consent']
  origin_agency_id: string
  created_by: string
  version: number
  closed_outcome: ReferralRow['closedOutcome']
  closed_at: string | null
  created_at: string
  updated_at: string
}

export interface ShareJson {
  id: string
  referral_id: string
  agency_id: string
  status: ShareRow['status']
  scopes: ShareRow['scopes']
  message: string | null
  respond_by: string
  created_by: string
  decided_at: string | null
  decided_by: string | null
  decline_reason: string | null
  outcome: ShareRow['outcome']
  reminded_at: string | null
  created_at: string
  updated_at: string
}

const dateOrNull = (value: string | null) => value === null ? null : new Date(value)

/** The row drizzle's select() would give, from to_json: the same fields, timestamps as Dates. */
const referralFromJson = (r: ReferralJson): ReferralRow => ({
  id: r.id,
  reference: r.reference,
  status: r.status,
  urgency: r.urgency,
  needs: r.needs,
  ageGroup: r.age_group,
  consentBasis: r.consent_basis,
  summary: r.summary,
  identity: r.identity,
  contact: r.contact,
  circumstances: r.circumstances,
  consent: r.consent,
  originAgencyId: r.origin_agency_id,
  createdBy: r.created_by,
  version: r.version,
  closedOutcome: r.closed_outcome,
  closedAt: dateOrNull(r.closed_at),
  createdAt: new Date(r.created_at),
  updatedAt: new Date(r.updated_at)
})

export const shareFromJson = (s: ShareJson): ShareRow => ({
  id: s.id,
  referralId: s.referral_id,
  agencyId: s.agency_id,
  status: s.status,
  scopes: s.scopes,
  message: s.message,
  respondBy: new Date(s.respond_by),
  createdBy: s.created_by,
  decidedAt: dateOrNull(s.decided_at),
  decidedBy: s.decided_by,
  declineReason: s.decline_reason,
  outcome: s.outcome,
  remindedAt: dateOrNull(s.reminded_at),
  createdAt: new Date(s.created_at),
  updatedAt: new Date(s.updated_at)
})

const sharesOf = (id: string) => sql`(
  select coalesce(json_agg(s order by s.created_at, s.id), '[]'::json) from shares s where s.referral_id = ${id})`

/**
 * A referral and all its shares, whatever their number: one statement for a read; with a lock, the
 * locking read first and the shares after it, so they are read once the lock is held. Raw SQL
 * mapped as drizzle maps rows: building the two selects with drizzle's query builder cost more CPU
 * than all the rest of a read request (`pnpm bench`). Rows travel as JSON, which both drivers
 * (postgres.js, PGlite) decode the same way.
 */
export async function loadReferral (db: Db, id: string, lock?: 'update' | 'share') {
  if (lock === undefined) {
    const [row] = await rowsOf<{ referral: ReferralJson, shares: ShareJson[] }>(db, sql`
      select to_json(r) as referral, ${sharesOf(id)} as shares from referrals r where r.id = ${id}`)
    return row === undefined ? undefined : { referral: referralFromJson(row.referral), shares: row.shares.map(shareFromJson) }
  }
  const [row] = await rowsOf<{ referral: ReferralJson }>(db, sql`
    select to_json(r) as referral from referrals r where r.id = ${id} for ${sql.raw(lock === 'update' ? 'update' : 'share')}`)
  if (row === undefined) return undefined
  const [found] = await rowsOf<{ shares: ShareJson[] }>(db, sql`select ${sharesOf(id)} as shares`)
  return { referral: referralFromJson(row.referral), shares: (found?.shares ?? []).map(shareFromJson) }
}

/** Inserts a referral and returns its row, mapped as loadReferral maps rows (raw SQL for the same reason). */
export async function insertReferral (db: Db, values: ReturnType<typeof toGroups> & { id: string, originAgencyId: string, createdBy: string }): Promise<ReferralRow> {
  const json = (value: unknown) => value === null ? null : JSON.stringify(value)
  const [row] = await rowsOf<{ referral: ReferralJson }>(db, sql`
    insert into referrals (id, urgency, needs, age_group, consent_basis, consent, summary, identity, contact, circumstances, origin_agency_id, created_by)
    values (${values.id}, ${values.urgency}, ${`{${values.needs.join(',')}}`}::agency_service[], ${values.ageGroup}, ${values.consentBasis},
            ${json(values.consent)}::jsonb, ${json(values.summary)}::jsonb, ${json(values.identity)}::jsonb, ${json(values.contact)}::jsonb,
            ${json(values.circumstances)}::jsonb, ${values.originAgencyId}, ${values.createdBy})
    returning to_json(referrals) as referral`)
  if (row === undefined) throw new Error('insert returned no referral')
  return referralFromJson(row.referral)
}

interface ListRow {
  id: string
  reference: string
  status: 'open' | 'closed'
  urgency: ReferralRow['urgency']
  needs: string
  origin_agency_id: string
  created_at: string
  summary: ReferralRow['summary']
  share_id: string | null
  share_status: ShareStatus | null
  share_respond_by: string | null
}

/** Postgres array literal `{a,b}` of enum values, as the raw driver returns it for some drivers. */
const parseArray = (value: unknown): string[] => Array.isArray(value) ? value as string[] : String(value).replace(/^\{|\}$/g, '').split(',').filter((v) => v !== '')

/**
 * Summaries of the referrals an agency originated (outgoing) and of those shared with it that it
 * may still see (incoming), newest first, keyset-paginated on (created_at, id). One statement: each
 * direction is read in its own index order and cut at the page size (outgoing: referrals_origin_idx,
 * backwards; incoming: the agency's shares), then the two are merged, and the agency's current
 * share of each referral on the page comes from a lateral join. Asking for "either direction" in
 * one WHERE clause instead made PostgreSQL read and sort every referral for every page.
 */
export async function listReferrals (db: Db, agencyId: string, query: ReferralListQuery) {
  const limit = query.limit ?? defaultPageSize
  const after = decodeCursor(query.cursor, ['timestamp', 'uuid'])
  const filters = () => sql`
      ${query.status !== undefined ? sql`and r.status = ${query.status}` : sql``}
      ${after !== undefined ? sql`and (r.created_at, r.id) < (${after[0]}::timestamptz, ${after[1]}::uuid)` : sql``}`
  const outgoing = sql`(
    select r.id from referrals r
    where r.origin_agency_id = ${agencyId} ${filters()}
    order by r.created_at desc, r.id desc
    limit ${limit + 1})`
  const incoming = sql`(
    select r.id from referrals r
    where r.id in (select referral_id from shares where agency_id = ${agencyId} and status in ('pending', 'accepted', 'closed'))
      and r.origin_agency_id <> ${agencyId} ${filters()}
      -- as accessOf: a closed share shows the referral only while consent still covers the agency
      and exists (select 1 from shares s where s.referral_id = r.id and s.agency_id = ${agencyId}
        and (s.status in ('pending', 'accepted') or r.consent_basis <> 'consent' or r.consent->>'sharingAllowedWith' = 'any'
             or r.consent->'sharingAllowedWith' ? ${agencyId}::text))
    order by r.created_at desc, r.id desc
    limit ${limit + 1})`
  const candidates = query.direction === 'outgoing' ? outgoing : query.direction === 'incoming' ? incoming : sql`${outgoing} union all ${incoming}`
  const rows = await rowsOf<ListRow>(db, sql`
    select r.id, r.reference, r.status, r.urgency, r.needs, r.origin_agency_id,
           to_char(r.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as created_at, r.summary,
           s.id as share_id, s.status as share_status,
           to_char(s.respond_by at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as share_respond_by
    from (${candidates}) candidate
    join referrals r on r.id = candidate.id
    left join lateral (
      select id, status, respond_by from shares
      where referral_id = r.id and agency_id = ${agencyId} and status in ('pending', 'accepted', 'closed')
      order by case status when 'accepted' then 0 when 'pending' then 1 else 2 end, created_at desc
      limit 1
    ) s on true
    order by r.created_at desc, r.id desc
    limit ${limit + 1}`)
  const page = rows.slice(0, limit)
  const last = page[page.length - 1]
  return {
    items: page.map((row) => ({
      id: row.id,
      reference: row.reference,
      status: row.status,
      urgency: row.urgency,
      needs: parseArray(row.needs) as ReferralRow['needs'],
      originAgencyId: row.origin_agency_id,
      createdAt: row.created_at,
      subject: row.summary.subject,
      exploitation: row.summary.exploitation,
      ...(row.share_id !== null && row.share_status !== null && row.share_respond_by !== null
        ? { share: { id: row.share_id, status: row.share_status, respondBy: row.share_respond_by } }
        : {})
    })),
    nextCursor: rows.length > limit && last !== undefined ? encodeCursor([last.created_at, last.id]) : null
  }
}
