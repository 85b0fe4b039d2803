import { join } from 'node:path'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import {
  AccessLogQuery, AuditCheckpoint, AuditEventPage, AuditEventQuery, AuditExportQuery, AuditVerification, type Database, KeyConfigError,
  Problem, readEd25519PublicKeys, ReferralParams
} from '@haven/schema'
import { Type } from 'typebox'
import { type ApiConfig, ConfigError } from '../config.ts'
import { auditContext, callerOf } from '../plugins/auth.ts'
import { exportAuditEvents, listAuditEvents, readAccessLog, readLatestCheckpoint, verifyTrail } from './audit.service.ts'

const security = [{ bearer: [] }]
const tags = ['audit']
const refusals = { 400: Problem, 401: Problem, 403: Problem }

/** The auditors' API: events, export, verify, the latest checkpoint, per-referral access log. */
export const auditRoutes: FastifyPluginAsyncTypebox<{ database: Database, config: ApiConfig }> = async (app, { database, config }) => {
  const db = database.db
  const keySource = {
    pem: config.auditPublicKeyPem, variable: 'HAVEN_AUDIT_PUBLIC_KEY', file: join(config.dataDir, 'audit-ed25519.pem'), env: config.env
  }
  // A configured key is checked at start; one derived from the worker's key file is read when needed (the worker may create it later).
  const publicKey = () => {
    try {
      return readEd25519PublicKeys(keySource)
    } catch (error) {
      if (error instanceof KeyConfigError) throw new ConfigError([error.message])
      throw error
    }
  }
  if (config.auditPublicKeyPem !== undefined) publicKey()

  app.addHook('onRequest', app.authenticate)
  // Who looked at which record is itself sensitive: never cached.
  app.addHook('onSend', async (_request, reply) => { void reply.header('cache-control', 'no-store') })

  app.get('/v1/audit/events', {
    schema: {
      tags, security, summary: 'Audit events, newest first (auditor: own agency\'s scope; platform_auditor: all)',
      querystring: AuditEventQuery, response: { 200: AuditEventPage, ...refusals }
    }
  }, async (request) => await listAuditEvents(db, callerOf(request), auditContext(request), request.query))

  app.get('/v1/audit/events/export', {
    schema: {
      tags, security, summary: 'Every matching audit event, oldest first, streamed as NDJSON or CSV',
      querystring: AuditExportQuery,
      response: {
        200: {
          description: 'One AuditEvent per line (NDJSON), or CSV with a header row.',
          content: { 'application/x-ndjson': { schema: Type.String() }, 'text/csv': { schema: Type.String() } }
        },
        ...refusals
      }
    }
  }, async (request, reply) => {
    // The 200 schema documents the file; a stream is sent as it is, never serialised.
    const file = await exportAuditEvents(db, callerOf(request), auditContext(request), request.query)
    return await reply.type(file.contentType).header('content-disposition', `attachment; filename="${file.filename}"`).send(file.body as never)
  })

  app.get('/v1/audit/verify', {
    schema: {
      tags, security, summary: 'Recompute the hash chain and check it against the signed checkpoints (platform_auditor)',
      response: { 200: AuditVerification, 401: Problem, 403: Problem }
    }
  }, async (request) => await verifyTrail(db, callerOf(request), auditContext(request), { publicKey, checkpointFile: config.checkpointFile }))

  app.get('/v1/audit/checkpoints/latest', {
    schema: {
      tags, security, summary: 'The latest signed checkpoint of the audit chain (auditor, platform_auditor)',
      response: { 200: AuditCheckpoint, 401: Problem, 403: Problem, 404: Problem }
    }
  }, async (request) => await readLatestCheckpoint(db, callerOf(request), auditContext(request)))

  app.get('/v1/referrals/:id/access-log', {
    schema: {
      tags, security, summary: 'Who did what to one referral (auditor of the origin agency, platform_auditor, origin agency_admin)',
      params: ReferralParams, querystring: AccessLogQuery, response: { 200: AuditEventPage, ...refusals, 404: Problem }
    }
  }, async (request) => await readAccessLog(db, callerOf(request), auditContext(request), request.params.id, request.query))
}
