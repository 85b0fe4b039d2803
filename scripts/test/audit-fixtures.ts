/**
 * Fixtures of the audit trail tests: a throwaway database of their own on the test server (tamper
 * tests disable triggers as a superuser, which must never touch the shared test database), a
 * checkpoint key and file sink of their own, and bulk-seeded events.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Database, openDatabase } from '@haven/schema'
import postgres from 'postgres'
import type { Test } from 'tap'
import type { SealerConfig } from '../../services/worker/src/sealer.ts'

export const serverUrl = process.env.HAVEN_TEST_SERVER_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

export interface OwnDatabase {
  url: string
  database: Database
  /** A superuser session on it: for tampering and for setting roles. */
  superuser: postgres.Sql
}

export async function ownDatabase (t: Test): Promise<OwnDatabase> {
  const name = `haven_audit_${Date.now()}_${randomBytes(3).toString('hex')}`
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  const database = await openDatabase({ url: url.toString(), max: 4 })
  await database.migrate()
  const superuser = postgres(url.toString(), { max: 1, onnotice: () => {} })
  t.teardown(async () => {
    await superuser.end()
    await database.close()
    await admin.unsafe(`drop database if exists "${name}" with (force)`)
    await admin.end()
  })
  return { url: url.toString(), database, superuser }
}

export function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'haven-audit-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

export interface AuditKeys { privatePem: string, publicPem: string }

export function auditKeys (): AuditKeys {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString()
  }
}

export function sealerConfig (dir: string, keys: AuditKeys, overrides: Partial<SealerConfig> = {}): SealerConfig {
  return {
    env: 'test',
    dataDir: dir,
    auditSigningKeyPem: keys.privatePem,
    checkpointFile: join(dir, 'checkpoints.ndjson'),
    checkpointIntervalSeconds: 3600,
    checkpointEveryEvents: 10,
    ...overrides
  }
}

export const silentLog = { info: () => {}, warn: () => {}, error: () => {} }

/** Inserts `count` plain events in one statement (ids only, as the API writes them). */
export async function seedEvents (sql: postgres.Sql, count: number, fields: { referralId?: string, actorAgencyId?: string } = {}) {
  await sql`
    insert into audit_events (actor_user_id, actor_agency_id, actor_roles, action, outcome, referral_id, target_type, target_id, request_id, ip)
    select gen_random_uuid(), ${fields.actorAgencyId ?? null}::uuid, '{caseworker}', 'referral.read', 'success',
           coalesce(${fields.referralId ?? null}::uuid, gen_random_uuid()), 'referral', gen_random_uuid(), 'req-' || n, '10.0.0.1'
    from generate_series(1, ${count}::int) n`
}
