/**
 * Sign-in, refresh-token rotation and logout. Refresh tokens are random, stored as SHA-256 hashes,
 * single-use and grouped in families (one per sign-in): presenting a spent token revokes the family.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import {
  agencies, type AuditContext, type Db, type Me, refreshTokens, type TokenResponse, users, writeAuditEvent
} from '@haven/schema'
import { and, eq, isNull, sql } from 'drizzle-orm'
import { tooManyRequests, unauthorized } from '../errors.ts'
import { accessTokenSeconds, type Caller } from '../plugins/auth.ts'
import { verifyPassword } from './passwords.ts'
import { accountRetryAfter, ipRetryAfter, lockSignInTarget, type SignInTarget, unknownAccountId } from './throttle.ts'

export const refreshTokenDays = 7

const hashToken = (token: string) => createHash('sha256').update(token).digest('hex')
const signInRefused = () => unauthorized('The email or password is incorrect.')

export interface TokenSigner { signAccessToken: (userId: string) => string }

async function issueTokens (tx: Db, signer: TokenSigner, userId: string, familyId: string): Promise<TokenResponse> {
  const refreshToken = randomBytes(32).toString('base64url')
  await tx.insert(refreshTokens).values({
    familyId,
    userId,
    tokenHash: hashToken(refreshToken),
    expiresAt: new Date(Date.now() + refreshTokenDays * 24 * 3600 * 1000)
  })
  return { accessToken: signer.signAccessToken(userId), refreshToken, tokenType: 'Bearer', expiresIn: accessTokenSeconds }
}

const actorOf = (user: { id: string, agencyId: string, roles: Caller['roles'] }) =>
  ({ userId: user.id, agencyId: user.agencyId, roles: user.roles })

/**
 * `pseudonymKey` names the failures of emails with no account (throttle.ts), so they lock exactly
 * like an account does; an unknown email is also verified against a decoy hash, so timing doesn't tell.
 * Counting an account's failures, checking the password and recording a failure happen under one
 * lock per account, or parallel guesses would all count the same failures and all get through.
 */
export async function login (db: Db, signer: TokenSigner, pseudonymKey: Buffer, context: AuditContext, email: string, password: string): Promise<TokenResponse> {
  const ip = context.ip ?? 'unknown'
  const ipWait = await ipRetryAfter(db, ip)
  if (ipWait > 0) throw tooManyRequests(ipWait, 'Too many failed sign-ins from this address. Try again later.')

  const [user] = await db.select({
    id: users.id, agencyId: users.agencyId, roles: users.roles, status: users.status,
    passwordHash: users.passwordHash, agencyStatus: agencies.status
  }).from(users).innerJoin(agencies, eq(agencies.id, users.agencyId))
    .where(sql`lower(${users.email}) = lower(${email.trim()})`)
  const target: SignInTarget = user !== undefined ? { type: 'user', id: user.id } : { type: 'unknown_account', id: unknownAccountId(pseudonymKey, email) }

  // The transaction returns what to answer, so a recorded failure commits though the caller gets an error.
  const result = await db.transaction(async (tx): Promise<TokenResponse | { wait: number } | 'refused'> => {
    await lockSignInTarget(tx, target)
    const accountWait = await accountRetryAfter(tx, target)
    if (accountWait > 0) return { wait: accountWait }
    const passwordOk = await verifyPassword(user?.passwordHash, password)
    if (user === undefined || !passwordOk || user.status !== 'active' || user.agencyStatus !== 'active') {
      await writeAuditEvent(tx, context, { action: 'auth.login_failed', outcome: 'denied', target })
      return 'refused'
    }
    const tokens = await issueTokens(tx, signer, user.id, randomUUID())
    await writeAuditEvent(tx, { ...context, actor: actorOf(user) }, { action: 'auth.login', outcome: 'success', target: { type: 'user', id: user.id } })
    return tokens
  })
  if (result === 'refused') throw signInRefused()
  if ('wait' in result) throw tooManyRequests(result.wait, 'Too many failed sign-ins for this account. Try again later.')
  return result
}

export async function refresh (db: Db, signer: TokenSigner, context: AuditContext, presented: string): Promise<TokenResponse> {
  // The transaction returns what to do, so a revocation commits even though the caller gets a 401.
  const result = await db.transaction(async (tx): Promise<TokenResponse | 'refused'> => {
    const [token] = await tx.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, hashToken(presented))).for('update')
    if (token === undefined) return 'refused'
    const [user] = await tx.select({
      id: users.id, agencyId: users.agencyId, roles: users.roles, status: users.status, agencyStatus: agencies.status
    }).from(users).innerJoin(agencies, eq(agencies.id, users.agencyId)).where(eq(users.id, token.userId))
    if (user === undefined) return 'refused'
    const session = { type: 'session' as const, id: token.familyId }
    const userContext = { ...context, actor: actorOf(user) }
    if (token.spentAt !== null) {
      await tx.update(refreshTokens).set({ revokedAt: new Date() })
        .where(and(eq(refreshTokens.familyId, token.familyId), isNull(refreshTokens.revokedAt)))
      await writeAuditEvent(tx, userContext, { action: 'auth.token_reuse', outcome: 'denied', target: session })
      return 'refused'
    }
    if (token.revokedAt !== null || token.expiresAt.getTime() <= Date.now() || user.status !== 'active' || user.agencyStatus !== 'active') {
      await writeAuditEvent(tx, userContext, { action: 'auth.refresh', outcome: 'denied', target: session })
      return 'refused'
    }
    await tx.update(refreshTokens).set({ spentAt: new Date() }).where(eq(refreshTokens.id, token.id))
    const tokens = await issueTokens(tx, signer, user.id, token.familyId)
    await writeAuditEvent(tx, userContext, { action: 'auth.refresh', outcome: 'success', target: session })
    return tokens
  })
  if (result === 'refused') throw unauthorized('The refresh token is invalid, expired or already used.')
  return result
}

/** Ends the session the refresh token belongs to. A token of somebody else's changes nothing. */
export async function logout (db: Db, caller: Caller, context: AuditContext, presented: string): Promise<void> {
  await db.transaction(async (tx) => {
    const [token] = await tx.select({ familyId: refreshTokens.familyId }).from(refreshTokens)
      .where(and(eq(refreshTokens.tokenHash, hashToken(presented)), eq(refreshTokens.userId, caller.userId)))
    if (token !== undefined) {
      await tx.update(refreshTokens).set({ revokedAt: new Date() })
        .where(and(eq(refreshTokens.familyId, token.familyId), isNull(refreshTokens.revokedAt)))
    }
    await writeAuditEvent(tx, context, {
      action: 'auth.logout',
      outcome: 'success',
      ...(token !== undefined ? { target: { type: 'session', id: token.familyId } } : {})
    })
  })
}

export async function me (db: Db, caller: Caller): Promise<Me> {
  const [row] = await db.select({
    id: users.id, email: users.email, name: users.name, roles: users.roles,
    agencyId: agencies.id, agencyName: agencies.name, agencyKind: agencies.kind
  }).from(users).innerJoin(agencies, eq(agencies.id, users.agencyId)).where(eq(users.id, caller.userId))
  if (row === undefined) throw unauthorized()
  return { id: row.id, email: row.email, name: row.name, roles: row.roles, agency: { id: row.agencyId, name: row.agencyName, kind: row.agencyKind } }
}
