import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { type Db, IdParams, NotificationListQuery, NotificationPage, Problem } from '@haven/schema'
import { callerOf } from '../plugins/auth.ts'
import { listNotifications, markRead } from './notifications.service.ts'

const security = [{ bearer: [] }]
const tags = ['notifications']

/** In-app notifications: references and ids only, for the signed-in user. */
export const notificationRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async (app, { db }) => {
  app.addHook('onRequest', app.authenticate)

  app.get('/v1/notifications', {
    schema: { tags, security, summary: 'My notifications, newest first', querystring: NotificationListQuery, response: { 200: NotificationPage, 400: Problem, 401: Problem } }
  }, async (request) => await listNotifications(db, callerOf(request), request.query))

  app.post('/v1/notifications/:id/read', {
    schema: { tags, security, summary: 'Mark one of my notifications read', params: IdParams, response: { 204: { type: 'null' }, 400: Problem, 401: Problem, 404: Problem } }
  }, async (request, reply) => {
    await markRead(db, callerOf(request), request.params.id)
    return await reply.code(204).send(null)
  })
}
