/**
 * Builds the Haven API: plugins in the order they run, then one register call per feature.
 * Everything the app uses is passed in, so tests build it against the real database and Redis.
 */
import { randomUUID } from 'node:crypto'
import fastifyCors from '@fastify/cors'
import fastifyHelmet from '@fastify/helmet'
import fastifyRateLimit from '@fastify/rate-limit'
import fastifySwagger from '@fastify/swagger'
import fastifySwaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { type Database, defaultPurpose, type Purpose, purposes } from '@haven/schema'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Redis } from 'ioredis'
import type { DestinationStream } from 'pino'
import { agencyRoutes } from './agencies/agencies.routes.ts'
import { auditRoutes } from './audit/audit.routes.ts'
import { authRoutes } from './auth/auth.routes.ts'
import type { ApiConfig } from './config.ts'
import { badRequest, registerErrorHandling, tooManyRequests } from './errors.ts'
import type { SigningKeys } from './keys.ts'
import { noteRoutes } from './notes/notes.routes.ts'
import { notificationRoutes } from './notifications/notifications.routes.ts'
import { healthRoutes } from './ops/health.routes.ts'
import { referralRoutes } from './referrals/referrals.routes.ts'
import { shareRoutes } from './shares/shares.routes.ts'
import { logRedisAvailability } from './redis.ts'
import { registerAuth } from './plugins/auth.ts'
import { userRoutes } from './users/users.routes.ts'
import { unsafeInput, validatorCompiler } from './validation.ts'
import { webhookRoutes } from './webhooks/webhooks.routes.ts'

export interface AppDeps {
  config: ApiConfig
  database: Database
  redis: Redis
  keys: SigningKeys
  /** Where logs go; stdout when absent. Tests pass a stream to read what was logged. */
  logStream?: DestinationStream
}

declare module 'fastify' {
  interface FastifyRequest {
    purpose: Purpose
  }
}

export type App = FastifyInstance

/**
 * Log paths that may carry secrets or personal data. A safety net for structured fields only:
 * free text (an error's message) is kept out of the log where it is written (errors.ts `loggable`).
 */
export const redactedLogPaths = [
  'req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]',
  '*.password', '*.refreshToken', '*.accessToken', '*.secret', '*.token',
  '*.email', '*.contactEmail', '*.name', '*.givenName', '*.familyName', '*.aliases', '*.dateOfBirth',
  '*.nationality', '*.contact', '*.phone', '*.address', '*.narrative', '*.notes', '*.body', 'body'
]

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/

export async function buildApp (deps: AppDeps): Promise<FastifyInstance> {
  const { config, database } = deps
  const logger: FastifyServerOptions['logger'] = {
    level: config.logLevel,
    redact: { paths: redactedLogPaths, censor: '[redacted]' },
    ...(deps.logStream !== undefined ? { stream: deps.logStream } : {})
  }
  const app = Fastify({
    logger,
    bodyLimit: 1024 * 1024,
    trustProxy: config.trustProxy,
    requestIdHeader: false,
    // A caller's X-Request-Id is kept when it is a plain token, so logs can't be forged through it.
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && requestIdPattern.test(given) ? given : randomUUID()
    },
  }).withTypeProvider<TypeBoxTypeProvider>()
  app.setValidatorCompiler(validatorCompiler)
  // JSON only: any other body is 415, never parsed.
  app.removeContentTypeParser('text/plain')

  registerErrorHandling(app)
  logRedisAvailability(deps.redis, app.log)
  app.decorateRequest('purpose', defaultPurpose)
  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id)
    const purpose = request.headers['haven-purpose']
    if (purpose === undefined) return
    if (typeof purpose !== 'string' || !(purposes as readonly string[]).includes(purpose)) {
      throw badRequest('Haven-Purpose is not a known purpose of use.',
        [{ path: '/headers/haven-purpose', message: `must be one of ${purposes.join(', ')}` }])
    }
    request.purpose = purpose as Purpose
  })
  // A POST or PATCH sent without a body is validated as `{}`: optional bodies need no special case,
  // and a required field that is missing is reported by name.
  app.addHook('preValidation', async (request) => {
    if (request.body === undefined && (request.method === 'POST' || request.method === 'PATCH')) request.body = {}
    for (const [part, value] of [['body', request.body], ['querystring', request.query], ['params', request.params]] as const) {
      const path = unsafeInput(value, `/${part}`)
      if (path !== undefined) throw badRequest('The request holds a NUL character or is nested too deeply.', [{ path, message: 'has a NUL character or is nested too deeply' }])
    }
  })

  await registerAuth(app, database.db, deps.keys)
  await app.register(fastifyHelmet)
  await app.register(fastifyCors, { origin: config.corsOrigins.length > 0 ? config.corsOrigins : false })
  await app.register(fastifyRateLimit, {
    global: true,
    // After authentication, so a signed-in user is limited as a user and anyone else by address.
    hook: 'preHandler',
    timeWindow: 60_000,
    max: (request) => request.caller !== null ? config.rateLimitUserPerMin : config.rateLimitIpPerMin,
    keyGenerator: (request) => request.caller !== null ? `user:${request.caller.userId}` : `ip:${request.ip}`,
    errorResponseBuilder: (_request, context) => tooManyRequests(context.ttl / 1000)
  })
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Haven API',
        version: '1.0.0',
        description: 'Multi-agency referral and case-sharing for modern slavery and human trafficking.'
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } }
    }
  })
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', staticCSP: true })
  app.get('/openapi.json', { schema: { hide: true }, config: { rateLimit: false } }, async () => app.swagger())

  await app.register(healthRoutes, { database, redis: deps.redis })
  await app.register(authRoutes, { db: database.db, keys: deps.keys })
  await app.register(agencyRoutes, { db: database.db })
  await app.register(userRoutes, { db: database.db })
  await app.register(referralRoutes, { db: database.db })
  await app.register(shareRoutes, { db: database.db })
  await app.register(noteRoutes, { db: database.db })
  await app.register(auditRoutes, { database, config })
  await app.register(notificationRoutes, { db: database.db })
  await app.register(webhookRoutes, { db: database.db, config })
  return app
}
