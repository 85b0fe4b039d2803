/**
 * Request validation. Bodies are checked strictly: no type coercion (a number where a string is
 * expected is a 400, not silently "3"), no removal of unknown properties (they are a 400), every
 * error reported. Query strings and path parameters arrive as text, so there numbers and booleans
 * are coerced from their text form.
 */
import { uuidPattern } from '@haven/schema'
import { Ajv, type Options } from 'ajv'
import formats from 'ajv-formats'
import { fullFormats } from 'ajv-formats/dist/formats.js'
import type { FastifySchemaCompiler } from 'fastify'
import { type ProblemDetail, validationDetails } from './errors.ts'

const addFormats = formats as unknown as (ajv: Ajv) => Ajv

const common: Options = { allErrors: true, removeAdditional: false, useDefaults: true, strict: false }

/**
 * UUIDs are case-insensitive (RFC 9562), but the API compares ids as text in places (a share among
 * its referral's shares, an agency in a consent's `sharingAllowedWith`). So every value validated
 * as a `uuid` is rewritten in lower case, here and nowhere else: schemas get this keyword wherever
 * they say `format: "uuid"` (see `lowercasingUuids`).
 */
const lowercaseUuid = 'havenLowercaseUuid'

/**
 * Formats as PostgreSQL reads them, so a value that passes validation can never fail in the
 * database: ajv-formats' `uuid` also takes a `urn:uuid:` prefix, and its `date-time` takes the year
 * 0000, which PostgreSQL rejects.
 */
function withFormats (ajv: Ajv): Ajv {
  addFormats(ajv)
  ajv.addFormat('uuid', uuidPattern)
  const dateTime = fullFormats['date-time'] as { validate: (value: string) => boolean }
  ajv.addFormat('date-time', (value: string) => !value.startsWith('0000') && dateTime.validate(value))
  ajv.addKeyword({
    keyword: lowercaseUuid,
    modifying: true,
    schemaType: 'boolean',
    validate: (_schema: boolean, data: unknown, _parent: unknown, context?: { parentData: Record<string | number, unknown>, parentDataProperty: string | number }) => {
      if (typeof data === 'string' && uuidPattern.test(data) && context !== undefined) context.parentData[context.parentDataProperty] = data.toLowerCase()
      return true
    }
  })
  return ajv
}
const strict = withFormats(new Ajv({ ...common, coerceTypes: false }))
const coercing = withFormats(new Ajv({ ...common, coerceTypes: 'array' }))

/** Each schema's copy with the lower-casing keyword beside every `format: "uuid"`, made once (Ajv caches by schema object). */
const withLowercasing = new WeakMap<object, object>()
function lowercasingUuids (schema: object): object {
  const known = withLowercasing.get(schema)
  if (known !== undefined) return known
  const copy = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(copy)
    if (value === null || typeof value !== 'object') return value
    const entries = Object.entries(value).map(([key, item]) => [key, copy(item)])
    return Object.fromEntries((value as { format?: unknown }).format === 'uuid' ? [...entries, [lowercaseUuid, true]] : entries)
  }
  const result = copy(schema) as object
  withLowercasing.set(schema, result)
  return result
}

const maxDepth = 16

/**
 * What no schema lets through but a database or a recursive merge would choke on: NUL characters
 * (PostgreSQL text cannot hold them) and JSON nested deeper than any Haven body needs. The path of
 * the first offending value, or undefined.
 */
export function unsafeInput (value: unknown, path: string, depth = 0): string | undefined {
  if (typeof value === 'string') return value.includes('\u0000') ? path : undefined
  if (value === null || typeof value !== 'object') return undefined
  if (depth >= maxDepth) return path
  for (const [key, item] of Object.entries(value)) {
    if (key.includes('\u0000')) return path
    const found = unsafeInput(item, `${path}/${key}`, depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

export const validatorCompiler: FastifySchemaCompiler<object> = ({ schema, httpPart }) =>
  (httpPart === 'body' ? strict : coercing).compile(lowercasingUuids(schema))

/** Validates a value built on the server from client input (a merged patch) as strictly as a body. */
export function bodyErrors (schema: object, value: unknown): ProblemDetail[] {
  const validate = strict.compile(lowercasingUuids(schema))
  return validate(value) ? [] : validationDetails(validate.errors ?? [], '/body')
}
