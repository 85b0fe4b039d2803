import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import {
  type Db, DeliveryListQuery, DeliveryPage, DeliveryParams, IdParams, PageQuery, Problem, WebhookCreate, WebhookPage, WebhookParams,
  WebhookWithSecret
} from '@haven/schema'
import { Type } from 'typebox'
import type { ApiConfig } from '../config.ts'
import { auditContext, callerOf } from '../plugins/auth.ts'
import { createWebhook, deleteWebhook, listDeliveries, listWebhooks, retryDelivery } from './webhooks.service.ts'

const security = [{ bearer: [] }]
const tags = ['webhooks']
const refusals = { 400: Problem, 401: Problem, 403: Problem, 404: Problem }

/** Webhook registration and deliveries: an agency's own admins only. */
export const webhookRoutes: FastifyPluginAsyncTypebox<{ db: Db, config: ApiConfig }> = async (app, { db, config }) => {
  app.addHook('onRequest', app.authenticate)

  app.post('/v1/agencies/:id/webhooks', {
    schema: { tags, security, summary: 'Register a webhook (agency_admin of the agency); the secret is shown once', params: IdParams, body: WebhookCreate, response: { 201: WebhookWithSecret, ...refusals, 422: Problem } }
  }, async (request, reply) => {
    const webhook = await createWebhook(db, callerOf(request), auditContext(request), request.params.id, request.body, config.webhookAllowPrivate)
    return await reply.code(201).header('cache-control', 'no-store').send(webhook)
  })

  app.get('/v1/agencies/:id/webhooks', {
    schema: { tags, security, summary: 'The agency\'s webhooks (no secrets)', params: IdParams, querystring: Type.Object({ ...PageQuery }, { additionalProperties: false }), response: { 200: WebhookPage, ...refusals } }
  }, async (request) => await listWebhooks(db, callerOf(request), auditContext(request), request.params.id, request.query))

  app.delete('/v1/agencies/:id/webhooks/:webhookId', {
    schema: { tags, security, summary: 'Delete a webhook', params: WebhookParams, response: { 204: { type: 'null' }, ...refusals } }
  }, async (request, reply) => {
    await deleteWebhook(db, callerOf(request), auditContext(request), request.params.id, request.params.webhookId)
    return await reply.code(204).send(null)
  })

  app.get('/v1/agencies/:id/webhooks/:webhookId/deliveries', {
    schema: { tags, security, summary: 'Deliveries to a webhook, newest first; ?status=failed for the failed ones', params: WebhookParams, querystring: DeliveryListQuery, response: { 200: DeliveryPage, ...refusals } }
  }, async (request) => await listDeliveries(db, callerOf(request), auditContext(request), request.params.id, request.params.webhookId, request.query))

  app.post('/v1/agencies/:id/webhooks/:webhookId/deliveries/:deliveryId/retry', {
    schema: { tags, security, summary: 'Retry a failed delivery', params: DeliveryParams, response: { 202: { type: 'null' }, ...refusals, 409: Problem } }
  }, async (request, reply) => {
    await retryDelivery(db, callerOf(request), auditContext(request), request.params.id, request.params.webhookId, request.params.deliveryId)
    return await reply.code(202).send(null)
  })
}
