import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Agency, AgencyCreate, AgencyListQuery, AgencyPage, AgencyPatch, type Db, IdParams, Problem } from '@haven/schema'
import { auditContext, callerOf } from '../plugins/auth.ts'
import { listAgencies } from './agencies.queries.ts'
import { createAgency, getAgency, updateAgency } from './agencies.service.ts'

const security = [{ bearer: [] }]
const tags = ['agencies']

export const agencyRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async (app, { db }) => {
  app.addHook('onRequest', app.authenticate)

  app.post('/v1/agencies', {
    schema: { tags, security, summary: 'Create an agency (platform_admin)', body: AgencyCreate, response: { 201: Agency, 400: Problem, 401: Problem, 403: Problem } }
  }, async (request, reply) => {
    const agency = await createAgency(db, callerOf(request), auditContext(request), request.body)
    return await reply.code(201).send(agency)
  })

  app.get('/v1/agencies', {
    schema: { tags, security, summary: 'The agency directory, by name', querystring: AgencyListQuery, response: { 200: AgencyPage, 400: Problem, 401: Problem } }
  }, async (request) => await listAgencies(db, request.query))

  app.get('/v1/agencies/:id', {
    schema: { tags, security, summary: 'One agency', params: IdParams, response: { 200: Agency, 400: Problem, 401: Problem, 404: Problem } }
  }, async (request) => await getAgency(db, request.params.id))

  app.patch('/v1/agencies/:id', {
    schema: { tags, security, summary: 'Edit an agency (platform_admin; agency_admin of it, not status)', params: IdParams, body: AgencyPatch, response: { 200: Agency, 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem } }
  }, async (request) => await updateAgency(db, callerOf(request), auditContext(request), request.params.id, request.body))
}
