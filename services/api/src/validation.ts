/**
 * Request validation. Bodies are checked strictly: no type coercion (a number where a string is
 * expected is a 400, not silently "3"), no removal of unknown properties (they are a 400), every
 * error reported. Query strings and path parameters arrive as text, so there numbers and booleans
 * are coerced from their text form.
 */
import { Ajv, type Options } from 'ajv'
import formats from 'ajv-formats'
import type { FastifySchemaCompiler } from 'fastify'
import { type ProblemDetail, validationDetails } from './errors.ts'

const addFormats = formats as unknown as (ajv: Ajv) => Ajv

const common: Options = { allErrors: true, removeAdditional: false, useDefaults: true, strict: false }
const strict = addFormats(new Ajv({ ...common, coerceTypes: false }))
const coercing = addFormats(new Ajv({ ...common, coerceTypes: 'array' }))

export const validatorCompiler: FastifySchemaCompiler<object> = ({ schema, httpPart }) =>
  (httpPart === 'body' ? strict : coercing).compile(schema)

/** Validates a value built on the server from client input (a merged patch) as strictly as a body. */
export function bodyErrors (schema: object, value: unknown): ProblemDetail[] {
  const validate = strict.compile(schema)
  return validate(value) ? [] : validationDetails(validate.errors ?? [], '/body')
}
