import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import {
  type Db, Problem, Referral, ReferralClose, ReferralInput, ReferralListQuery, ReferralPage, ReferralParams, ReferralPatch, Timeline
} from '@haven/schema'
import { Type } from 'typebox'
import { auditContext, callerOf } from '../plugins/auth.ts'
import { closeReferral, createReferral, listReferralSummaries, readReferral, updateReferral } from './referrals.service.ts'
import { readTimeline } from './timeline.ts'

const security = [{ bearer: [] }]
const tags = ['referrals']
const refusals = { 400: Problem, 401: Problem, 403: Problem, 404: Problem }
const IdempotencyHeaders = Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[\\x21-\\x7e]+$' })) })

export const referralRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async (app, { db }) => {
  app.addHook('onRequest', app.authenticate)
  // Case content must never sit in a browser or proxy cache.
  app.addHook('onSend', async (_request, reply) => { void reply.header('cache-control', 'no-store') })

  app.post('/v1/referrals', {
    schema: { tags, security, summary: 'Record a referral (referrer). Honours Idempotency-Key.', headers: IdempotencyHeaders, body: ReferralInput, response: { 201: Referral, ...refusals, 422: Problem } }
  }, async (request, reply) => {
    const { referral, etag } = await createReferral(db, callerOf(request), auditContext(request), request.body, request.headers['idempotency-key'])
    return await reply.code(201).header('etag', etag).header('location', `/v1/referrals/${referral.id}`).send(referral)
  })

  app.get('/v1/referrals', {
    schema: { tags, security, summary: 'Summaries of outgoing and incoming referrals, newest first', querystring: ReferralListQuery, response: { 200: ReferralPage, 400: Problem, 401: Problem, 403: Problem } }
  }, async (request) => await listReferralSummaries(db, callerOf(request), auditContext(request), request.query))

  app.get('/v1/referrals/:id', {
    schema: { tags, security, summary: 'A referral, as the caller may see it', params: ReferralParams, response: { 200: Referral, ...refusals } }
  }, async (request, reply) => {
    const { referral, etag } = await readReferral(db, callerOf(request), auditContext(request), request.params.id)
    if (etag !== undefined) void reply.header('etag', etag)
    return referral
  })

  app.patch('/v1/referrals/:id', {
    schema: { tags, security, summary: 'Edit a referral (origin agency): a JSON merge patch with If-Match', params: ReferralParams, body: ReferralPatch, response: { 200: Referral, ...refusals, 409: Problem, 412: Problem, 422: Problem, 428: Problem } }
  }, async (request, reply) => {
    const { referral, etag } = await updateReferral(db, callerOf(request), auditContext(request), request.params.id, request.body, request.headers['if-match'])
    return await reply.header('etag', etag).send(referral)
  })

  app.post('/v1/referrals/:id/close', {
    schema: { tags, security, summary: 'Close a referral (origin agency); withdraws its open shares', params: ReferralParams, body: ReferralClose, response: { 200: Referral, ...refusals, 409: Problem } }
  }, async (request, reply) => {
    const { referral, etag } = await closeReferral(db, callerOf(request), auditContext(request), request.params.id, request.body)
    return await reply.header('etag', etag).send(referral)
  })

  app.get('/v1/referrals/:id/timeline', {
    schema: { tags, security, summary: 'What happened to a referral, as far as the caller may see', params: ReferralParams, response: { 200: Timeline, ...refusals } }
  }, async (request) => await readTimeline(db, callerOf(request), auditContext(request), request.params.id))
}
