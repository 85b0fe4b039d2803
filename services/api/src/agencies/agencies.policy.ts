/**
 * Who may manage agencies and their users. Platform roles act across agencies; an agency_admin only
 * inside its own agency, and never on platform roles or the people who hold them.
 */
import { platformRoles, type Role } from '@haven/schema'
import type { Caller } from '../plugins/auth.ts'

export const isPlatformAdmin = (caller: Caller) => caller.roles.includes('platform_admin')
const isAdminOf = (caller: Caller, agencyId: string) => caller.roles.includes('agency_admin') && caller.agencyId === agencyId

export const mayCreateAgency = (caller: Caller) => isPlatformAdmin(caller)

/** Editing an agency's profile; only a platform admin changes its `status`. */
export const mayUpdateAgency = (caller: Caller, agencyId: string, changesStatus: boolean) =>
  isPlatformAdmin(caller) || (isAdminOf(caller, agencyId) && !changesStatus)

/** Whether the caller's roles manage users in some agency; anyone else is refused outright (403). */
export const managesUsers = (caller: Caller) => isPlatformAdmin(caller) || caller.roles.includes('agency_admin')

export const mayManageUsersOf = (caller: Caller, agencyId: string) => isPlatformAdmin(caller) || isAdminOf(caller, agencyId)

export const grantsPlatformRole = (roles: readonly Role[]) => roles.some((r) => platformRoles.includes(r))

/** Whether the caller may set these roles on a user (undefined: roles unchanged). */
export const mayGrant = (caller: Caller, roles: readonly Role[] | undefined) =>
  isPlatformAdmin(caller) || roles === undefined || !grantsPlatformRole(roles)
