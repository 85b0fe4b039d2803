/**
 * Who is calling. Access tokens are EdDSA-signed JWTs checked for algorithm, issuer, audience and
 * expiry; then the user and its agency are read from the database on every request, so suspension
 * and role changes take effect on the very next request whatever token the caller holds.
 */
import fastifyJwt from '@fastify/jwt'
import { agencies, type AgencyKind, type AuditContext, type Db, type Role, users, uuidPattern } from '@haven/schema'
import { eq, sql } from 'drizzle-orm'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { unauthorized } from '../errors.ts'
import type { SigningKeys } from '../keys.ts'

export const tokenIssuer = 'haven'
export const tokenAudience = 'haven-api'
export const accessTokenSeconds = 15 * 60

export interface Caller {
  userId: string
  agencyId: string
  agencyKind: AgencyKind
  roles: readonly Role[]
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: { sub: string }
    user: { sub: string }
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by `authenticate`; null on anonymous routes. */
    caller: Caller | null
  }
  interface FastifyInstance {
    authenticate: (request: FastifyRequest) => Promise<void>
    signAccessToken: (userId: string) => string
  }
}

/** The signed-in caller; routes that use this have `authenticate` as their onRequest hook. */
export function callerOf (request: FastifyRequest): Caller {
  if (request.caller === null) throw unauthorized()
  return request.caller
}

export function auditContext (request: FastifyRequest): AuditContext {
  return {
    actor: request.caller === null
      ? { userId: null, agencyId: null, roles: [] }
      : { userId: request.caller.userId, agencyId: request.caller.agencyId, roles: request.caller.roles },
    requestId: request.id,
    ip: request.ip,
    purpose: request.purpose
  }
}

export async function registerAuth (app: FastifyInstance, db: Db, keys: SigningKeys) {
  await app.register(fastifyJwt, {
    secret: { private: keys.privateKeyPem, public: keys.publicKeyPem },
    sign: { algorithm: 'EdDSA', iss: tokenIssuer, aud: tokenAudience, expiresIn: `${accessTokenSeconds}s` },
    verify: {
      // A verified token is remembered (LRU, 1,000 tokens) until it expires: a client sends the same
      // token with every request for up to 15 minutes, and an EdDSA check cost as much CPU as the rest
      // of a small request (`pnpm bench`). The user is still read on every request.
      cache: true,
      algorithms: ['EdDSA'],
      allowedIss: tokenIssuer,
      allowedAud: tokenAudience,
      requiredClaims: ['sub', 'iss', 'aud', 'exp']
    }
  })
  app.decorateRequest('caller', null)
  app.decorate('signAccessToken', (userId: string) => app.jwt.sign({ sub: userId }))
  // Built once: the same statement runs on every authenticated request.
  const callerQuery = db.select({
    userId: users.id,
    roles: users.roles,
    userStatus: users.status,
    agencyId: agencies.id,
    agencyKind: agencies.kind,
    agencyStatus: agencies.status
  }).from(users).innerJoin(agencies, eq(agencies.id, users.agencyId))
    .where(eq(users.id, sql.placeholder('userId')))
    .prepare('haven_caller')
  app.decorate('authenticate', async (request: FastifyRequest) => {
    let subject: string
    try {
      subject = (await request.jwtVerify<{ sub: string }>()).sub
    } catch {
      throw unauthorized('The access token is missing, invalid or expired.')
    }
    const [row] = await callerQuery.execute({ userId: uuidPattern.test(subject) ? subject : '00000000-0000-0000-0000-000000000000' })
    if (row === undefined || row.userStatus !== 'active' || row.agencyStatus !== 'active') {
      throw unauthorized('This account is not active.')
    }
    request.caller = { userId: row.userId, agencyId: row.agencyId, agencyKind: row.agencyKind, roles: row.roles }
  })
}
