import { type AuditContext, type Db, type UserCreate, type UserPatch, users, writeAuditEvent } from '@haven/schema'
import { eq, sql } from 'drizzle-orm'
import { grantsPlatformRole, isPlatformAdmin, managesUsers, mayGrant, mayManageUsersOf } from '../agencies/agencies.policy.ts'
import { findAgency } from '../agencies/agencies.queries.ts'
import { refuse } from '../audit.ts'
import { hashPassword } from '../auth/passwords.ts'
import { conflict, forbidden, isUniqueViolation, notFound } from '../errors.ts'
import type { Caller } from '../plugins/auth.ts'
import { countOtherActivePlatformAdmins, findUser, listUsers, lockPlatformAdmins, toUser } from './users.queries.ts'

export async function createUser (db: Db, caller: Caller, context: AuditContext, agencyId: string, input: UserCreate) {
  if (await findAgency(db, agencyId) === undefined) throw notFound('agency')
  if (!mayManageUsersOf(caller, agencyId)) {
    throw await refuse(db, context, { action: 'user.create', target: { type: 'agency', id: agencyId } },
      forbidden('You may only add users to your own agency.'))
  }
  if (!mayGrant(caller, input.roles)) {
    throw await refuse(db, context, { action: 'user.create', target: { type: 'agency', id: agencyId } },
      forbidden('Only a platform admin grants platform roles.'))
  }
  const passwordHash = await hashPassword(input.password)
  try {
    return await db.transaction(async (tx) => {
      const [row] = await tx.insert(users).values({ agencyId, email: input.email, name: input.name, roles: input.roles, passwordHash }).returning()
      if (row === undefined) throw new Error('insert returned no user')
      await writeAuditEvent(tx, context, { action: 'user.create', outcome: 'success', target: { type: 'user', id: row.id } })
      return toUser(row)
    })
  } catch (error) {
    if (isUniqueViolation(error)) throw conflict('A user with this email already exists.')
    throw error
  }
}

/** Staff names and emails are personal data too: each listing is audited (`user.list`, an extension of the contract's action names). */
export async function listAgencyUsers (db: Db, caller: Caller, context: AuditContext, agencyId: string, query: { limit?: number, cursor?: string }) {
  if (await findAgency(db, agencyId) === undefined) throw notFound('agency')
  const target = { type: 'agency' as const, id: agencyId }
  if (!mayManageUsersOf(caller, agencyId)) {
    throw await refuse(db, context, { action: 'user.list', target }, forbidden('You may only list your own agency\'s users.'))
  }
  return await db.transaction(async (tx) => {
    const page = await listUsers(tx, agencyId, query)
    await writeAuditEvent(tx, context, { action: 'user.list', outcome: 'success', target })
    return page
  })
}

/**
 * Renames, re-roles, suspends or reinstates a user. A role that never manages users is 403 whatever
 * the id, so nothing leaks; for an agency admin, users outside its agency are 404, so another
 * agency's user ids can't be probed. Suspension needs no token revocation: every request re-reads
 * the user's status.
 */
export async function updateUser (db: Db, caller: Caller, context: AuditContext, id: string, patch: UserPatch) {
  const target = { type: 'user' as const, id }
  if (!managesUsers(caller)) {
    throw await refuse(db, context, { action: 'user.update', target }, forbidden('Your role does not manage users.'))
  }
  const user = await findUser(db, id)
  if (user === undefined || !mayManageUsersOf(caller, user.agencyId)) {
    if (user !== undefined) await refuse(db, context, { action: 'user.update', target }, notFound('user'))
    throw notFound('user')
  }
  if (!isPlatformAdmin(caller) && patch.roles !== undefined && user.id === caller.userId) {
    // An agency admin sees no case content; it must not be able to hand itself a role that does.
    throw await refuse(db, context, { action: 'user.update', target }, forbidden('You cannot change your own roles; ask a platform admin or another agency admin.'))
  }
  if (!mayGrant(caller, patch.roles) || (!isPlatformAdmin(caller) && grantsPlatformRole(user.roles))) {
    throw await refuse(db, context, { action: 'user.update', target }, forbidden('Only a platform admin manages platform roles.'))
  }
  return await db.transaction(async (tx) => {
    if (patch.status === 'suspended' || patch.roles !== undefined) await lockPlatformAdmins(tx)
    // Re-read under the lock: two admins demoting each other at once must not both count the other.
    const current = await findUser(tx, id) ?? user
    const losesPlatformAdmin = current.status === 'active' && current.roles.includes('platform_admin') &&
      (patch.status === 'suspended' || (patch.roles !== undefined && !patch.roles.includes('platform_admin')))
    if (losesPlatformAdmin && await countOtherActivePlatformAdmins(tx, { userId: id }) === 0) {
      throw conflict('This is the last active platform admin: appoint another before suspending or demoting this one.')
    }
    const [row] = await tx.update(users).set({ ...patch, updatedAt: sql`now()` }).where(eq(users.id, id)).returning()
    if (row === undefined) throw notFound('user')
    await writeAuditEvent(tx, context, { action: 'user.update', outcome: 'success', target })
    return toUser(row)
  })
}
