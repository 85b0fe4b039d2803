/**
 * Typed errors and the one error handler. Services throw `HttpProblem`s; everything reaches the
 * client as RFC 9457 problem+json with the request id. A 5xx never shows its cause: the details go
 * to the log, keyed by the same request id.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

export interface ProblemDetail { path: string, message: string }

export class HttpProblem extends Error {
  constructor (
    readonly status: number,
    readonly slug: string,
    readonly title: string,
    readonly detail: string,
    readonly errors?: ProblemDetail[],
    readonly headers?: Record<string, string>
  ) {
    super(detail)
  }
}

export const badRequest = (detail: string, errors?: ProblemDetail[]) =>
  new HttpProblem(400, 'bad-request', 'Bad request', detail, errors)
export const unauthorized = (detail = 'Sign in to continue.') =>
  new HttpProblem(401, 'unauthorized', 'Unauthorized', detail)
export const forbidden = (detail = 'Your role does not allow this.') =>
  new HttpProblem(403, 'forbidden', 'Forbidden', detail)
export const notFound = (what = 'resource') =>
  new HttpProblem(404, 'not-found', 'Not found', `No such ${what}, or it is not visible to you.`)
export const conflict = (detail: string) => new HttpProblem(409, 'conflict', 'Conflict', detail)
export const unprocessable = (detail: string, errors?: ProblemDetail[]) =>
  new HttpProblem(422, 'domain-rule', 'Unprocessable content', detail, errors)
export const tooManyRequests = (retryAfterSeconds: number, detail = 'Too many requests. Try again later.') =>
  new HttpProblem(429, 'rate-limited', 'Too many requests', detail, undefined, { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) })

export const serviceUnavailable = () => new HttpProblem(503, 'unavailable', 'Service unavailable',
  'A service Haven depends on is unavailable. Try again shortly.', undefined, { 'retry-after': '5' })

/**
 * Connection-level database failures (the driver's codes, PostgreSQL's admin-shutdown and
 * too-many-connections states), also when drizzle wraps them as `cause`: the client did nothing
 * wrong and a retry may succeed.
 */
function isDatabaseUnavailable (error: { code?: unknown, cause?: unknown }): boolean {
  const codes = ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED',
    'CONNECT_TIMEOUT', '57P01', '57P02', '57P03', '53300', '08000', '08003', '08006']
  const code = (e: unknown) => (e as { code?: unknown } | null)?.code
  return codes.includes(String(code(error))) || codes.includes(String(code(error.cause)))
}

/** A unique violation, whichever driver raised it (drizzle wraps the driver's error as `cause`). */
export function isUniqueViolation (error: unknown): boolean {
  const codeOf = (e: unknown) => (e as { code?: unknown } | null)?.code
  return codeOf(error) === '23505' || codeOf((error as { cause?: unknown } | null)?.cause) === '23505'
}

const problemType = (slug: string) => `urn:haven:problem:${slug}`

interface SchemaError { instancePath: string, keyword: string, params: unknown, message?: string | undefined }

/** Schema validation errors as `{ path, message }`, naming the missing or unknown property itself. */
export function validationDetails (errors: readonly SchemaError[], prefix: string): ProblemDetail[] {
  return errors.map((v) => {
    const params = v.params as { missingProperty?: string, additionalProperty?: string }
    const missing = v.keyword === 'required' ? `/${String(params.missingProperty)}` : ''
    const extra = v.keyword === 'additionalProperties' ? `/${String(params.additionalProperty)}` : ''
    const message = v.keyword === 'additionalProperties' ? 'is not an allowed property' : (v.message ?? 'is invalid')
    return { path: prefix + v.instancePath + missing + extra, message }
  })
}

/** Fastify's own errors that are the client's fault, mapped to what the contract promises. */
function fromFastifyError (error: FastifyError): HttpProblem | undefined {
  if (error.validation !== undefined) {
    const errors = validationDetails(error.validation, `/${error.validationContext ?? 'body'}`)
    return badRequest('The request does not match the schema: see errors.', errors)
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return badRequest('The body is not valid JSON.')
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return badRequest('The body is empty but the content type says JSON.')
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new HttpProblem(413, 'too-large', 'Content too large', 'The body is larger than 1 MiB.')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new HttpProblem(415, 'unsupported-media-type', 'Unsupported media type', 'Send application/json.')
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return badRequest('Content-Length does not match the body.')
  }
  if (error instanceof SyntaxError) return badRequest('The body is not valid JSON.')
  if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
    return new HttpProblem(error.statusCode, 'client-error', 'Client error', 'The request was refused.')
  }
  return undefined
}

export function sendProblem (reply: FastifyReply, request: FastifyRequest, problem: HttpProblem) {
  for (const [name, value] of Object.entries(problem.headers ?? {})) void reply.header(name, value)
  return reply.code(problem.status).type('application/problem+json').send({
    type: problemType(problem.slug),
    title: problem.title,
    status: problem.status,
    detail: problem.detail,
    requestId: request.id,
    ...(problem.errors !== undefined ? { errors: problem.errors } : {})
  })
}

/**
 * What of an unexpected error may be logged: its kind, codes and where it was thrown. Never its
 * message: a driver's message carries the failed statement's parameters (drizzle's "Failed query:
 * … params: …"), which for a referral are a victim's identity and circumstances.
 */
export function loggable (error: unknown) {
  const e = error as { name?: unknown, code?: unknown, stack?: unknown, cause?: { name?: unknown, code?: unknown } } | null
  return {
    name: String(e?.name ?? 'Error'),
    code: e?.code !== undefined ? String(e.code) : undefined,
    cause: e?.cause !== undefined ? { name: String(e.cause.name ?? 'Error'), code: e.cause.code !== undefined ? String(e.cause.code) : undefined } : undefined,
    // Only the frames, without the first line (the message).
    frames: typeof e?.stack === 'string' ? e.stack.split('\n').slice(1, 8).map((line) => line.trim()) : undefined
  }
}

export function registerErrorHandling (app: FastifyInstance) {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const problem = error instanceof HttpProblem ? error : fromFastifyError(error)
    if (problem !== undefined) return sendProblem(reply, request, problem)
    request.log.error({ error: loggable(error) }, 'unhandled error')
    if (isDatabaseUnavailable(error)) return sendProblem(reply, request, serviceUnavailable())
    return sendProblem(reply, request, new HttpProblem(500, 'internal', 'Internal server error',
      'Something went wrong on our side. Quote the request id if you report it.'))
  })
  app.setNotFoundHandler((request, reply) => sendProblem(reply, request, notFound('route')))
}
