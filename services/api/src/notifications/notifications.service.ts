import { type Db, type NotificationListQuery, notifications } from '@haven/schema'
import { and, desc, eq, isNull, sql } from 'drizzle-orm'
import { notFound } from '../errors.ts'
import { decodeCursor, defaultPageSize, toPage } from '../pagination.ts'
import type { Caller } from '../plugins/auth.ts'

/** A user's own notifications only: the WHERE clause carries the caller, never a parameter. */
export async function listNotifications (db: Db, caller: Caller, query: NotificationListQuery) {
  const limit = query.limit ?? defaultPageSize
  const after = decodeCursor(query.cursor, ['timestamp', 'uuid'])
  const rows = await db.select().from(notifications).where(and(
    eq(notifications.userId, caller.userId),
    query.unread === true ? isNull(notifications.readAt) : undefined,
    after !== undefined ? sql`(${notifications.createdAt}, ${notifications.id}) < (${after[0]}::timestamptz, ${after[1]}::uuid)` : undefined
  )).orderBy(desc(notifications.createdAt), desc(notifications.id)).limit(limit + 1)
  return toPage(rows, limit, (row) => [row.createdAt.toISOString(), row.id], (row) => ({
    id: row.id,
    type: row.type,
    referralId: row.referralId,
    shareId: row.shareId,
    reference: row.reference,
    createdAt: row.createdAt.toISOString(),
    readAt: row.readAt?.toISOString() ?? null
  }))
}

/** Marks read; someone else's notification is 404 like one that does not exist. Reading twice is fine. */
export async function markRead (db: Db, caller: Caller, id: string) {
  const [row] = await db.update(notifications).set({ readAt: sql`coalesce(${notifications.readAt}, now())` })
    .where(and(eq(notifications.id, id), eq(notifications.userId, caller.userId))).returning({ id: notifications.id })
  if (row === undefined) throw notFound('notification')
}
