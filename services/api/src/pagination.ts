/**
 * Keyset pagination: a cursor is the sort key of the last item returned, opaque to clients
 * (base64url JSON). Inserts between pages neither repeat nor skip items already ordered before it.
 */
import { uuidPattern } from '@haven/schema'
import { badRequest } from './errors.ts'

export const defaultPageSize = 50

export const encodeCursor = (key: readonly (string | number)[]) =>
  Buffer.from(JSON.stringify(key)).toString('base64url')

/** Whether `value` names a real instant, written back as itself. */
const sameInstant = (value: string) => {
  const ms = Date.parse(value)
  return !Number.isNaN(ms) && new Date(ms).toISOString() === value
}

type KeyPart = 'text' | 'uuid' | 'timestamp' | 'number'
type KeyValue<P extends KeyPart> = P extends 'number' ? number : string
const fits = (value: unknown, part: KeyPart): boolean => {
  switch (part) {
    case 'number': return Number.isSafeInteger(value)
    case 'uuid': return typeof value === 'string' && uuidPattern.test(value)
    // Exactly what toISOString() writes, from year 0001 (PostgreSQL has no year 0), and a real
    // instant: Date.parse also takes 30 February or hour 24, which PostgreSQL refuses (a 500).
    case 'timestamp': return typeof value === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(value) && !value.startsWith('0000') && sameInstant(value)
    // PostgreSQL text cannot hold NUL.
    case 'text': return typeof value === 'string' && !value.includes('\u0000') && value.length <= 1000
  }
}

/**
 * The sort key in a cursor, checked part by part against the shape the list expects, so a forged
 * cursor is a 400 and never reaches the database as a malformed value.
 */
export function decodeCursor<const T extends readonly KeyPart[]> (cursor: string | undefined, shape: T): { [K in keyof T]: KeyValue<T[K]> } | undefined {
  if (cursor === undefined) return undefined
  let key: unknown
  try {
    key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    key = undefined
  }
  if (!Array.isArray(key) || key.length !== shape.length || key.some((v, i) => !fits(v, shape[i] as KeyPart))) {
    throw badRequest('The cursor is not one this list gave out.', [{ path: '/querystring/cursor', message: 'is not a valid cursor' }])
  }
  return key as never
}

/** Splits a fetch of `limit + 1` rows into a page and the cursor to the next one. */
export function toPage<Row, Item> (rows: Row[], limit: number, keyOf: (row: Row) => readonly (string | number)[], toItem: (row: Row) => Item) {
  const page = rows.slice(0, limit)
  const last = page[page.length - 1]
  return {
    items: page.map(toItem),
    nextCursor: rows.length > limit && last !== undefined ? encodeCursor(keyOf(last)) : null
  }
}
