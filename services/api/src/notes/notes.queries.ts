import type { Note, notes } from '@haven/schema'

export const toNote = (row: typeof notes.$inferSelect): Note => ({
  id: row.id,
  referralId: row.referralId,
  agencyId: row.agencyId,
  authorId: row.authorId,
  body: row.body,
  visibility: row.visibility,
  createdAt: row.createdAt.toISOString()
})
