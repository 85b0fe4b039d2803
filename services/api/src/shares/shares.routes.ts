import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { type Db, Problem, ReferralParams, Share, ShareClose, ShareCreate, ShareDecline, ShareParams, ShareWithdraw } from '@haven/schema'
import { Type } from 'typebox'
import { auditContext, callerOf } from '../plugins/auth.ts'
import { createShare, transitionShare } from './shares.service.ts'

const security = [{ bearer: [] }]
const tags = ['shares']
const refusals = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem }

export const shareRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async (app, { db }) => {
  app.addHook('onRequest', app.authenticate)
  app.addHook('onSend', async (_request, reply) => { void reply.header('cache-control', 'no-store') })

  app.post('/v1/referrals/:id/shares', {
    schema: { tags, security, summary: 'Share a referral with another agency (origin agency)', params: ReferralParams, body: ShareCreate, response: { 201: Share, ...refusals, 422: Problem } }
  }, async (request, reply) => {
    const share = await createShare(db, callerOf(request), auditContext(request), request.params.id, request.body)
    return await reply.code(201).send(share)
  })

  app.post('/v1/referrals/:id/shares/:shareId/accept', {
    schema: { tags, security, summary: 'Accept a pending share (recipient caseworker)', params: ShareParams, body: Type.Object({}, { additionalProperties: false }), response: { 200: Share, ...refusals } }
  }, async (request) => await transitionShare(db, callerOf(request), auditContext(request), request.params.id, request.params.shareId, 'accept'))

  app.post('/v1/referrals/:id/shares/:shareId/decline', {
    schema: { tags, security, summary: 'Decline a pending share (recipient caseworker)', params: ShareParams, body: ShareDecline, response: { 200: Share, ...refusals } }
  }, async (request) => await transitionShare(db, callerOf(request), auditContext(request), request.params.id, request.params.shareId, 'decline', { declineReason: request.body.reason }))

  app.post('/v1/referrals/:id/shares/:shareId/withdraw', {
    schema: { tags, security, summary: 'Withdraw a pending or accepted share (origin agency)', params: ShareParams, body: ShareWithdraw, response: { 200: Share, ...refusals } }
  }, async (request) => await transitionShare(db, callerOf(request), auditContext(request), request.params.id, request.params.shareId, 'withdraw',
    request.body.reason !== undefined ? { reason: request.body.reason } : {}))

  app.post('/v1/referrals/:id/shares/:shareId/close', {
    schema: { tags, security, summary: 'Report the outcome and close an accepted share (recipient caseworker)', params: ShareParams, body: ShareClose, response: { 200: Share, ...refusals } }
  }, async (request) => await transitionShare(db, callerOf(request), auditContext(request), request.params.id, request.params.shareId, 'close',
    { outcome: request.body.outcome, ...(request.body.note !== undefined ? { note: request.body.note } : {}) }))
}
