import { type Db, LoginBody, Me, Problem, RefreshBody, TokenResponse } from '@haven/schema'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { auditContext, callerOf } from '../plugins/auth.ts'
import type { SigningKeys } from '../keys.ts'
import { login, logout, me, refresh } from './auth.service.ts'
import { pseudonymKeyFrom } from './throttle.ts'

const errors = { 400: Problem, 401: Problem, 429: Problem }

export const authRoutes: FastifyPluginAsyncTypebox<{ db: Db, keys: SigningKeys }> = async (app, { db, keys }) => {
  const pseudonymKey = pseudonymKeyFrom(keys.privateKeyPem)

  app.post('/v1/auth/login', {
    schema: { tags: ['auth'], summary: 'Sign in with email and password', body: LoginBody, response: { 200: TokenResponse, ...errors } }
  }, async (request) => await login(db, app, pseudonymKey, auditContext(request), request.body.email, request.body.password))

  app.post('/v1/auth/refresh', {
    schema: { tags: ['auth'], summary: 'Exchange a refresh token for new tokens (the old one is spent)', body: RefreshBody, response: { 200: TokenResponse, ...errors } }
  }, async (request) => await refresh(db, app, auditContext(request), request.body.refreshToken))

  app.post('/v1/auth/logout', {
    onRequest: app.authenticate,
    schema: { tags: ['auth'], summary: 'End the session of a refresh token', security: [{ bearer: [] }], body: RefreshBody, response: { 204: { type: 'null' }, ...errors } }
  }, async (request, reply) => {
    await logout(db, callerOf(request), auditContext(request), request.body.refreshToken)
    return await reply.code(204).send(null)
  })

  app.get('/v1/me', {
    onRequest: app.authenticate,
    schema: { tags: ['auth'], summary: 'The signed-in user', security: [{ bearer: [] }], response: { 200: Me, 401: Problem } }
  }, async (request) => await me(db, callerOf(request)))
}
