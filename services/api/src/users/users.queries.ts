import { agencies, type Db, users } from '@haven/schema'
import { and, asc, eq, sql } from 'drizzle-orm'
import { decodeCursor, defaultPageSize, toPage } from '../pagination.ts'

export type UserRow = typeof users.$inferSelect

/** The public shape of a user: never the password hash. */
export const toUser = (row: UserRow) => ({
  id: row.id,
  agencyId: row.agencyId,
  email: row.email,
  name: row.name,
  roles: row.roles,
  status: row.status,
  createdAt: row.createdAt.toISOString(),
  updatedAt: row.updatedAt.toISOString()
})

export async function findUser (db: Db, id: string): Promise<UserRow | undefined> {
  const [row] = await db.select().from(users).where(eq(users.id, id))
  return row
}

/** An agency's users, oldest first. The cursor holds a time and an id, never a name or email. */
export async function listUsers (db: Db, agencyId: string, query: { limit?: number, cursor?: string }) {
  const limit = query.limit ?? defaultPageSize
  const after = decodeCursor(query.cursor, ['timestamp', 'uuid'])
  const rows = await db.select().from(users)
    .where(and(
      eq(users.agencyId, agencyId),
      after !== undefined ? sql`(${users.createdAt}, ${users.id}) > (${after[0]}::timestamptz, ${after[1]}::uuid)` : undefined
    ))
    .orderBy(asc(users.createdAt), asc(users.id)).limit(limit + 1)
  return toPage(rows, limit, (row) => [row.createdAt.toISOString(), row.id], toUser)
}

/**
 * Active platform admins whose agency is active too (a suspended agency's users can't sign in),
 * leaving out one user or a whole agency: the platform must keep at least one.
 */
export async function countOtherActivePlatformAdmins (db: Db, except: { userId: string } | { agencyId: string }): Promise<number> {
  const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(users).innerJoin(agencies, eq(agencies.id, users.agencyId))
    .where(and(
      sql`'platform_admin' = any(${users.roles})`, eq(users.status, 'active'), eq(agencies.status, 'active'),
      'userId' in except ? sql`${users.id} <> ${except.userId}` : sql`${users.agencyId} <> ${except.agencyId}`
    ))
  return row?.n ?? 0
}

/**
 * Serialises changes that may remove a platform admin (a user's suspension or demotion, an agency's
 * suspension), until the transaction ends, so the check that another active one remains and the
 * change act as one.
 */
export async function lockPlatformAdmins (tx: Db): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended('haven.platform-admins', 0))`)
}
