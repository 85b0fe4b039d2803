/**
 * TypeBox schemas for every request and response body of the HTTP contract (DESIGN.md section 2).
 * Objects reject unknown properties; responses list their fields explicitly, so a column added to a
 * table later can never leak through a response.
 */
import { type Static, Type, type TSchema } from 'typebox'
import { agencyKinds, agencyServices, agencyStatuses, purposes, roles, userStatuses } from './constants.ts'

const strict = { additionalProperties: false } as const

const StringEnum = <const Values extends string[]>(values: readonly [...Values]) =>
  Type.Enum<Values>(values, { type: 'string' })

export const Uuid = Type.String({ format: 'uuid' })
export const DateTime = Type.String({ format: 'date-time' })
/** Emails are at most 254 characters (RFC 5321). */
export const Email = Type.String({ format: 'email', maxLength: 254 })
/** One line of display text: a name, a region. */
const Line = (maxLength = 200) => Type.String({ minLength: 1, maxLength, pattern: '\\S' })

export const IdParams = Type.Object({ id: Uuid }, strict)

export const Problem = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  detail: Type.String(),
  requestId: Type.String(),
  errors: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() })))
}, { $id: 'Problem' })
export type Problem = Static<typeof Problem>

export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 500 }))
}

export const Page = <T extends TSchema>(item: T) => Type.Object({
  items: Type.Array(item),
  nextCursor: Type.Union([Type.String(), Type.Null()])
})

export const AgencyKindSchema = StringEnum(agencyKinds)
export const AgencyServiceSchema = StringEnum(agencyServices)
export const RoleSchema = StringEnum(roles)
export const PurposeSchema = StringEnum(purposes)

// --- auth -------------------------------------------------------------------------------------

export const LoginBody = Type.Object({
  email: Type.String({ minLength: 1, maxLength: 254 }),
  password: Type.String({ minLength: 1, maxLength: 1024 })
}, strict)
export type LoginBody = Static<typeof LoginBody>

export const RefreshBody = Type.Object({ refreshToken: Type.String({ minLength: 1, maxLength: 200 }) }, strict)
export type RefreshBody = Static<typeof RefreshBody>

export const TokenResponse = Type.Object({
  accessToken: Type.String(),
  refreshToken: Type.String(),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires.' })
})
export type TokenResponse = Static<typeof TokenResponse>

export const Me = Type.Object({
  id: Uuid,
  email: Type.String(),
  name: Type.String(),
  roles: Type.Array(RoleSchema),
  agency: Type.Object({ id: Uuid, name: Type.String(), kind: AgencyKindSchema })
})
export type Me = Static<typeof Me>

// --- agencies ---------------------------------------------------------------------------------

export const Agency = Type.Object({
  id: Uuid,
  name: Type.String(),
  kind: AgencyKindSchema,
  region: Type.String(),
  contactEmail: Type.String(),
  services: Type.Array(AgencyServiceSchema),
  acceptsReferrals: Type.Boolean(),
  status: StringEnum(agencyStatuses),
  createdAt: DateTime,
  updatedAt: DateTime
})
export type Agency = Static<typeof Agency>

const agencyFields = {
  name: Line(),
  kind: AgencyKindSchema,
  region: Line(),
  contactEmail: Email,
  services: Type.Array(AgencyServiceSchema, { uniqueItems: true, maxItems: agencyServices.length }),
  acceptsReferrals: Type.Boolean()
}

export const AgencyCreate = Type.Object({
  name: agencyFields.name,
  kind: agencyFields.kind,
  region: agencyFields.region,
  contactEmail: agencyFields.contactEmail,
  services: Type.Optional(agencyFields.services),
  acceptsReferrals: Type.Optional(agencyFields.acceptsReferrals)
}, strict)
export type AgencyCreate = Static<typeof AgencyCreate>

export const AgencyPatch = Type.Object({
  name: Type.Optional(agencyFields.name),
  kind: Type.Optional(agencyFields.kind),
  region: Type.Optional(agencyFields.region),
  contactEmail: Type.Optional(agencyFields.contactEmail),
  services: Type.Optional(agencyFields.services),
  acceptsReferrals: Type.Optional(agencyFields.acceptsReferrals),
  status: Type.Optional(StringEnum(agencyStatuses))
}, { ...strict, minProperties: 1 })
export type AgencyPatch = Static<typeof AgencyPatch>

export const AgencyListQuery = Type.Object({
  kind: Type.Optional(AgencyKindSchema),
  region: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  service: Type.Optional(AgencyServiceSchema),
  ...PageQuery
}, strict)
export type AgencyListQuery = Static<typeof AgencyListQuery>

export const AgencyPage = Page(Agency)

// --- users ------------------------------------------------------------------------------------

export const User = Type.Object({
  id: Uuid,
  agencyId: Uuid,
  email: Type.String(),
  name: Type.String(),
  roles: Type.Array(RoleSchema),
  status: StringEnum(userStatuses),
  createdAt: DateTime,
  updatedAt: DateTime
})
export type User = Static<typeof User>

const Roles = Type.Array(RoleSchema, { minItems: 1, uniqueItems: true, maxItems: roles.length })

export const UserCreate = Type.Object({
  email: Email,
  name: Line(),
  roles: Roles,
  password: Type.String({ minLength: 12, maxLength: 1024 })
}, strict)
export type UserCreate = Static<typeof UserCreate>

export const UserPatch = Type.Object({
  name: Type.Optional(Line()),
  roles: Type.Optional(Roles),
  status: Type.Optional(StringEnum(userStatuses))
}, { ...strict, minProperties: 1 })
export type UserPatch = Static<typeof UserPatch>

export const UserListQuery = Type.Object({ ...PageQuery }, strict)
export type UserListQuery = Static<typeof UserListQuery>

export const UserPage = Page(User)

// --- operations -------------------------------------------------------------------------------

export const Health = Type.Object({ status: Type.Literal('ok') })
export const Readiness = Type.Object({
  status: StringEnum(['ok', 'unavailable'] as const),
  database: StringEnum(['up', 'down'] as const),
  redis: StringEnum(['up', 'down'] as const)
})
export type Readiness = Static<typeof Readiness>
