import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { type Db, Note, NoteCreate, Problem, ReferralParams } from '@haven/schema'
import { auditContext, callerOf } from '../plugins/auth.ts'
import { createNote } from './notes.service.ts'

export const noteRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async (app, { db }) => {
  app.addHook('onRequest', app.authenticate)
  app.addHook('onSend', async (_request, reply) => { void reply.header('cache-control', 'no-store') })

  app.post('/v1/referrals/:id/notes', {
    schema: { tags: ['referrals'], security: [{ bearer: [] }], summary: 'Add a note (origin agency or accepted recipient)', params: ReferralParams, body: NoteCreate, response: { 201: Note, 400: Problem, 401: Problem, 403: Problem, 404: Problem } }
  }, async (request, reply) => {
    const note = await createNote(db, callerOf(request), auditContext(request), request.params.id, request.body)
    return await reply.code(201).send(note)
  })
}
