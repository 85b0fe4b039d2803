import { type Db, rowsOf, type ShareClose, type ShareStatus } from '@haven/schema'
import { sql } from 'drizzle-orm'
import { type ShareJson, shareFromJson, type ShareRow } from '../referrals/referrals.queries.ts'

/**
 * Moves a share from one of `from` to `to` in one conditional UPDATE, so of two concurrent
 * transitions exactly one finds the row to change; undefined when none did. An answer (accept,
 * decline) also needs the deadline not to have passed, and records who decided. Raw SQL mapped as
 * loadReferral maps rows: building the update with drizzle cost more CPU than sending it.
 */
export async function applyShareTransition (db: Db, change: {
  shareId: string
  from: readonly ShareStatus[]
  to: ShareStatus
  answeredBy?: string
  declineReason?: string
  outcome?: ShareClose['outcome']
}): Promise<ShareRow | undefined> {
  const [row] = await rowsOf<{ share: ShareJson }>(db, sql`
    update shares set status = ${change.to}, updated_at = now()
      ${change.answeredBy !== undefined ? sql`, decided_at = now(), decided_by = ${change.answeredBy}` : sql``}
      ${change.declineReason !== undefined ? sql`, decline_reason = ${change.declineReason}` : sql``}
      ${change.outcome !== undefined ? sql`, outcome = ${change.outcome}` : sql``}
    where id = ${change.shareId} and status in (${sql.join(change.from.map((status) => sql`${status}`), sql`, `)})
      ${change.answeredBy !== undefined ? sql`and respond_by > now()` : sql``}
    returning to_json(shares) as share`)
  return row === undefined ? undefined : shareFromJson(row.share)
}
