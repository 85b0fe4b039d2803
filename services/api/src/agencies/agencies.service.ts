import { agencies, type AgencyCreate, type AgencyPatch, type AuditContext, type Db, writeAuditEvent } from '@haven/schema'
import { eq, sql } from 'drizzle-orm'
import { refuse } from '../audit.ts'
import { conflict, forbidden, notFound } from '../errors.ts'
import type { Caller } from '../plugins/auth.ts'
import { countOtherActivePlatformAdmins, lockPlatformAdmins } from '../users/users.queries.ts'
import { mayCreateAgency, mayUpdateAgency } from './agencies.policy.ts'
import { findAgency, toAgency } from './agencies.queries.ts'

export async function createAgency (db: Db, caller: Caller, context: AuditContext, input: AgencyCreate) {
  if (!mayCreateAgency(caller)) {
    throw await refuse(db, context, { action: 'agency.create' }, forbidden('Only a platform admin creates agencies.'))
  }
  return await db.transaction(async (tx) => {
    const [row] = await tx.insert(agencies).values({
      name: input.name,
      kind: input.kind,
      region: input.region,
      contactEmail: input.contactEmail,
      services: input.services ?? [],
      acceptsReferrals: input.acceptsReferrals ?? true
    }).returning()
    if (row === undefined) throw new Error('insert returned no agency')
    await writeAuditEvent(tx, context, { action: 'agency.create', outcome: 'success', target: { type: 'agency', id: row.id } })
    return toAgency(row)
  })
}

export async function getAgency (db: Db, id: string) {
  const row = await findAgency(db, id)
  if (row === undefined) throw notFound('agency')
  return toAgency(row)
}

/**
 * A platform admin may change anything, suspension included; an agency admin its own agency's
 * profile only. Suspending an agency takes effect on its users' next request (see plugins/auth.ts).
 */
export async function updateAgency (db: Db, caller: Caller, context: AuditContext, id: string, patch: AgencyPatch) {
  const target = { type: 'agency' as const, id }
  if (!mayUpdateAgency(caller, id, patch.status !== undefined)) {
    throw await refuse(db, context, { action: 'agency.update', target },
      forbidden(patch.status !== undefined && caller.agencyId === id
        ? 'Only a platform admin changes an agency\'s status.'
        : 'You may only edit your own agency.'))
  }
  return await db.transaction(async (tx) => {
    if (patch.status === 'suspended') {
      // Suspending an agency signs out its platform admins too: one must remain elsewhere.
      await lockPlatformAdmins(tx)
      if (await countOtherActivePlatformAdmins(tx, { agencyId: id }) === 0) {
        throw conflict('This agency holds every active platform admin: appoint one elsewhere before suspending it.')
      }
    }
    const [row] = await tx.update(agencies).set({ ...patch, updatedAt: sql`now()` }).where(eq(agencies.id, id)).returning()
    if (row === undefined) throw notFound('agency')
    await writeAuditEvent(tx, context, { action: 'agency.update', outcome: 'success', target })
    return toAgency(row)
  })
}
