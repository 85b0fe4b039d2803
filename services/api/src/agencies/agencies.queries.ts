import { agencies, type AgencyListQuery, type Db } from '@haven/schema'
import { and, arrayContains, asc, eq, gt, or, sql, type SQL } from 'drizzle-orm'
import { decodeCursor, defaultPageSize, toPage } from '../pagination.ts'

export type AgencyRow = typeof agencies.$inferSelect

export const toAgency = (row: AgencyRow) => ({
  id: row.id,
  name: row.name,
  kind: row.kind,
  region: row.region,
  contactEmail: row.contactEmail,
  services: row.services,
  acceptsReferrals: row.acceptsReferrals,
  status: row.status,
  createdAt: row.createdAt.toISOString(),
  updatedAt: row.updatedAt.toISOString()
})

export async function findAgency (db: Db, id: string): Promise<AgencyRow | undefined> {
  const [row] = await db.select().from(agencies).where(eq(agencies.id, id))
  return row
}

/** The directory, by name; `region` matches case-insensitively. */
export async function listAgencies (db: Db, query: AgencyListQuery) {
  const limit = query.limit ?? defaultPageSize
  const after = decodeCursor(query.cursor, ['text', 'uuid'])
  const filters: (SQL | undefined)[] = [
    query.kind !== undefined ? eq(agencies.kind, query.kind) : undefined,
    query.region !== undefined ? sql`lower(${agencies.region}) = lower(${query.region})` : undefined,
    query.service !== undefined ? arrayContains(agencies.services, [query.service]) : undefined,
    after !== undefined ? or(gt(agencies.name, after[0]), and(eq(agencies.name, after[0]), gt(agencies.id, after[1]))) : undefined
  ]
  const rows = await db.select().from(agencies).where(and(...filters))
    .orderBy(asc(agencies.name), asc(agencies.id)).limit(limit + 1)
  return toPage(rows, limit, (row) => [row.name, row.id], toAgency)
}
