import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { type Db, IdParams, Problem, User, UserCreate, UserListQuery, UserPage, UserPatch } from '@haven/schema'
import { auditContext, callerOf } from '../plugins/auth.ts'
import { createUser, listAgencyUsers, updateUser } from './users.service.ts'

const security = [{ bearer: [] }]
const tags = ['users']
const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem }

export const userRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async (app, { db }) => {
  app.addHook('onRequest', app.authenticate)

  app.post('/v1/agencies/:id/users', {
    schema: { tags, security, summary: 'Add a user to an agency (platform_admin; agency_admin of it)', params: IdParams, body: UserCreate, response: { 201: User, ...errors, 409: Problem } }
  }, async (request, reply) => {
    const user = await createUser(db, callerOf(request), auditContext(request), request.params.id, request.body)
    return await reply.code(201).send(user)
  })

  app.get('/v1/agencies/:id/users', {
    schema: { tags, security, summary: 'An agency\'s users (platform_admin; agency_admin of it)', params: IdParams, querystring: UserListQuery, response: { 200: UserPage, ...errors } }
  }, async (request) => await listAgencyUsers(db, callerOf(request), auditContext(request), request.params.id, request.query))

  app.patch('/v1/users/:id', {
    schema: { tags, security, summary: 'Edit, suspend or reinstate a user (platform_admin; agency_admin of its agency)', params: IdParams, body: UserPatch, response: { 200: User, ...errors, 409: Problem } }
  }, async (request) => await updateUser(db, callerOf(request), auditContext(request), request.params.id, request.body))
}
