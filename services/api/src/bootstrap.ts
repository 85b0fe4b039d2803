/**
 * The first platform admin. On a start with no platform admin, one is created (with its own
 * "Haven platform" agency) from HAVEN_BOOTSTRAP_ADMIN_EMAIL / _PASSWORD, or outside production with a
 * generated password printed once. A transaction-level advisory lock makes concurrent starts create
 * one admin, and any later start creates none.
 */
import { randomBytes } from 'node:crypto'
import { agencies, type AuditContext, type Database, sql, users, writeAuditEvent } from '@haven/schema'
import { hashPassword } from './auth/passwords.ts'
import type { ApiConfig } from './config.ts'
import { ConfigError } from './config.ts'

const bootstrapLockKey = 0x4861_7662 // "Havb"
export const defaultBootstrapEmail = 'admin@haven.invalid'

export type BootstrapResult =
  | { created: false }
  | { created: true, email: string, generatedPassword: string | undefined }

const systemContext: AuditContext = { actor: { userId: null, agencyId: null, roles: [] }, requestId: null, ip: null, purpose: 'case_management' }

export async function bootstrapAdmin (database: Database, config: Pick<ApiConfig, 'env' | 'bootstrapAdminEmail' | 'bootstrapAdminPassword'>): Promise<BootstrapResult> {
  const email = config.bootstrapAdminEmail ?? defaultBootstrapEmail
  const generatedPassword = config.bootstrapAdminPassword === undefined ? randomBytes(18).toString('base64url') : undefined
  const password = config.bootstrapAdminPassword ?? generatedPassword ?? ''
  return await database.db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${bootstrapLockKey})`)
    const [existing] = await tx.select({ id: users.id }).from(users).where(sql`'platform_admin' = any(${users.roles})`).limit(1)
    if (existing !== undefined) return { created: false }
    if (config.env === 'production' && config.bootstrapAdminPassword === undefined) {
      throw new ConfigError(['HAVEN_BOOTSTRAP_ADMIN_EMAIL and HAVEN_BOOTSTRAP_ADMIN_PASSWORD are required when NODE_ENV=production and no platform admin exists'])
    }
    const [agency] = await tx.insert(agencies).values({
      name: 'Haven platform', kind: 'other', region: 'national', contactEmail: email, acceptsReferrals: false
    }).returning({ id: agencies.id })
    if (agency === undefined) throw new Error('insert returned no agency')
    const [admin] = await tx.insert(users).values({
      agencyId: agency.id, email, name: 'Platform admin', roles: ['platform_admin'], passwordHash: await hashPassword(password)
    }).returning({ id: users.id })
    if (admin === undefined) throw new Error('insert returned no user')
    await writeAuditEvent(tx, systemContext, { action: 'agency.create', outcome: 'success', target: { type: 'agency', id: agency.id } })
    await writeAuditEvent(tx, systemContext, { action: 'user.create', outcome: 'success', target: { type: 'user', id: admin.id } })
    return { created: true, email, generatedPassword }
  })
}
