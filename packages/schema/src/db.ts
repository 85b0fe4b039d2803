import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type SQL, sql } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator'
import postgres from 'postgres'
import type { AuditAction, AuditOutcome, AuditTargetType, OutboxType, Purpose, Role } from './constants.ts'
import * as tables from './tables.ts'

/** A database handle or an open transaction: every query function takes one of these first. */
export type Db = PgDatabase<PgQueryResultHKT, typeof tables>

export interface Database {
  db: Db
  kind: 'postgres' | 'pglite'
  /** Rows of a raw statement, whichever driver runs it. */
  rows: <T = Record<string, unknown>>(query: SQL) => Promise<T[]>
  /** Applies pending migrations; safe to call from several processes at once. */
  migrate: () => Promise<void>
  /** Calls `onNotify` for each NOTIFY on `channel`; resolves to a function that stops listening. */
  listen: (channel: string, onNotify: () => void) => Promise<() => Promise<void>>
  close: () => Promise<void>
}

const migrationsFolder = fileURLToPath(new URL('../migrations', import.meta.url))
/** Serialises migrations when several processes start at once. */
const migrationLockKey = 0x4861_7665 // "Have"

export interface DatabaseOptions {
  /** A postgres:// URL; when absent, an embedded PGlite database under `dataDir`. */
  url?: string | undefined
  dataDir?: string | undefined
  /** Pool size for PostgreSQL. */
  max?: number
  /**
   * PostgreSQL's application_name for the pool's connections and the migration session: which
   * service a backend serves, in pg_stat_activity. PGAPPNAME, or `application_name` in the URL,
   * overrides it.
   */
  applicationName?: string
  /**
   * Called with each statement sent to PostgreSQL and its parameters (tests count queries with it;
   * `pnpm bench` turns what one request sends into a pgbench script).
   */
  onQuery?: (statement: string, parameters: readonly unknown[]) => void
}

/** Opens the database the configuration names: PostgreSQL over `url`, else embedded PGlite. */
export async function openDatabase (options: DatabaseOptions): Promise<Database> {
  const url = options.url
  if (url !== undefined && url !== '') {
    const onQuery = options.onQuery
    const named = options.applicationName !== undefined && process.env.PGAPPNAME === undefined ? { connection: { application_name: options.applicationName } } : {}
    const client = postgres(url, {
      max: options.max ?? 10,
      onnotice: () => {},
      connect_timeout: 5,
      ...named,
      ...(onQuery !== undefined ? { debug: (_connection: number, statement: string, parameters: unknown[]) => { onQuery(statement, parameters) } } : {})
    })
    usePreparedStatements(client)
    const db = drizzlePostgres(client, { schema: tables }) as unknown as Db
    return {
      db,
      kind: 'postgres',
      rows: async <T>(query: SQL) => await rowsOf<T>(db, query),
      migrate: async () => {
        // A one-connection client, so the advisory lock and the migration share a session.
        const session = postgres(url, { max: 1, onnotice: () => {}, ...named })
        try {
          await session`select pg_advisory_lock(${migrationLockKey})`
          await migratePostgres(drizzlePostgres(session), { migrationsFolder })
        } finally {
          await session.end({ timeout: 5 })
        }
      },
      listen: async (channel, onNotify) => {
        const { unlisten } = await client.listen(channel, () => { onNotify() })
        return async () => { await unlisten() }
      },
      close: async () => { await client.end({ timeout: 5 }) }
    }
  }
  // Loaded only when used: under tsx, importing PGlite's bundle costs a process on PostgreSQL about
  // 45 MB of resident memory it would never use (pnpm bench).
  const [{ PGlite }, { drizzle: drizzlePglite }, { migrate: migratePglite }] = await Promise.all([
    import('@electric-sql/pglite'), import('drizzle-orm/pglite'), import('drizzle-orm/pglite/migrator')
  ])
  const dataDir = options.dataDir ?? '.haven'
  mkdirSync(dataDir, { recursive: true })
  const client = await PGlite.create(join(dataDir, 'pgdata'))
  const db = drizzlePglite(client, { schema: tables }) as unknown as Db
  return {
    db,
    kind: 'pglite',
    rows: async <T>(query: SQL) => await rowsOf<T>(db, query),
    // PGlite is one connection owned by this process: nobody else can migrate at the same time.
    migrate: async () => { await migratePglite(drizzlePglite(client), { migrationsFolder }) },
    listen: async (channel, onNotify) => await client.listen(channel, () => { onNotify() }),
    close: async () => { await client.close() }
  }
}

type Unsafe = (query: string, parameters?: unknown[], options?: { prepare?: boolean }) => unknown
type Begin = (...args: unknown[]) => unknown

/**
 * drizzle asks postgres.js for an unnamed statement for every query not given a name, so
 * PostgreSQL parsed, analysed and planned every statement on every execution, and postgres.js
 * decoded its row description every time. This restores postgres.js's own default, a named
 * prepared statement per distinct SQL text and connection (parsed and planned once), on the pool
 * and in each transaction. The texts are fixed by the code (parameters never go into them), so the
 * statements per connection are bounded. If a migration changes the result type of a cached
 * statement, postgres.js prepares it again (outside a transaction; inside one, that request fails).
 */
function usePreparedStatements (sql: postgres.Sql) {
  const target = sql as unknown as { unsafe: Unsafe, begin?: Begin }
  const unsafe = target.unsafe.bind(sql)
  target.unsafe = (query, parameters, options) => unsafe(query, parameters, { ...options, prepare: true })
  // Only the pool has begin(); a transaction's handle is patched as it is handed to the work.
  const begin = target.begin?.bind(sql)
  if (begin === undefined) return
  target.begin = (...args: unknown[]) => {
    const work = args[args.length - 1] as (tx: postgres.Sql) => unknown
    return begin(...args.slice(0, -1), (tx: postgres.Sql) => {
      usePreparedStatements(tx)
      return work(tx)
    })
  }
}

export interface AuditActor {
  userId: string | null
  agencyId: string | null
  roles: readonly Role[]
}

export interface AuditContext {
  actor: AuditActor
  requestId: string | null
  ip: string | null
  purpose: Purpose
}

export interface AuditEventInput {
  action: AuditAction
  outcome: AuditOutcome
  target?: { type: AuditTargetType, id: string | null }
  referralId?: string | null
  recipientAgencyId?: string | null
}

/** Rows of a raw statement on a handle or transaction, whichever driver runs it. */
export async function rowsOf<T = Record<string, unknown>> (db: Db, query: SQL): Promise<T[]> {
  const result = await db.execute(query) as unknown
  return Array.isArray(result) ? result as T[] : (result as { rows: T[] }).rows
}

/**
 * Appends one audit event. Call it with the transaction that does the work, so the event and the
 * change commit or fail together. Only ids and codes go in: never a name, email or free text.
 */
export async function writeAuditEvent (tx: Db, context: AuditContext, event: AuditEventInput): Promise<void> {
  await writeAuditEvents(tx, context, [event])
}

/**
 * Appends several audit events in one statement (a list read records each referral it returned).
 * The caller's fields are parameters once; each event's own fields travel as one JSON parameter
 * unpacked by PostgreSQL, in order. Raw SQL rather than drizzle's insert builder: every request
 * writes at least one event, and building the insert cost more CPU than the rest of a read
 * (`pnpm bench`).
 */
export async function writeAuditEvents (tx: Db, context: AuditContext, events: AuditEventInput[]): Promise<void> {
  if (events.length === 0) return
  const rows = events.map((event) => ({
    action: event.action,
    outcome: event.outcome,
    referral_id: event.referralId ?? null,
    target_type: event.target?.type ?? null,
    target_id: event.target?.id ?? null,
    recipient_agency_id: event.recipientAgencyId ?? null
  }))
  await tx.execute(sql`
    insert into audit_events (actor_user_id, actor_agency_id, actor_roles, action, outcome, referral_id, target_type, target_id,
                              recipient_agency_id, purpose, request_id, ip)
    select ${context.actor.userId}::uuid, ${context.actor.agencyId}::uuid, ${`{${context.actor.roles.join(',')}}`}::role[],
           e.action, e.outcome, e.referral_id, e.target_type, e.target_id, e.recipient_agency_id,
           ${context.purpose}::purpose, ${context.requestId}::text, ${context.ip}::text
    from json_to_recordset(${JSON.stringify(rows)}::json)
      as e(action audit_action, outcome audit_outcome, referral_id uuid, target_type audit_target_type, target_id uuid, recipient_agency_id uuid)`)
}

export interface OutboxMessage { type: OutboxType, payload: { referralId: string, shareId: string | null, agencyId: string } }

/**
 * Queues messages for the worker in the same transaction as the change they announce. Payloads
 * carry ids only: the worker re-reads whatever it needs.
 */
export async function writeOutbox (tx: Db, messages: OutboxMessage[]): Promise<void> {
  if (messages.length === 0) return
  // One JSON parameter unpacked in order, like the audit events: cheaper to send than to build.
  await tx.execute(sql`
    insert into outbox (type, payload)
    select m.type, m.payload from json_to_recordset(${JSON.stringify(messages)}::json) as m(type event_type, payload jsonb)`)
}

export { sql }
