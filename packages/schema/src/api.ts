/**
 * TypeBox schemas for every request and response body of the HTTP contract (DESIGN.md section 2).
 * Objects reject unknown properties; responses list their fields explicitly, so a column added to a
 * table later can never leak through a response.
 */
import { type Static, Type, type TSchema } from 'typebox'
import {
  agencyKinds, agencyServices, agencyStatuses, ageGroups, consentBases, consentMethods, exploitationTypes, genders, indicators,
  deliveryStatuses, notificationTypes, noteVisibilities, outboxTypes, purposes, referralStatuses, roles, shareOutcomes, shareScopes,
  shareStatuses, urgencies, userStatuses, webhookStatuses
} from './constants.ts'

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

// --- referrals --------------------------------------------------------------------------------

const Text = (maxLength: number) => Type.String({ minLength: 1, maxLength })
const Unique = <T extends TSchema>(item: T, maxItems: number, minItems = 0) => Type.Array(item, { uniqueItems: true, maxItems, minItems })
/** A BCP 47 language tag such as `ro`, `pl` or `pt-BR`. */
const Language = Type.String({ pattern: '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$', maxLength: 35 })

export const UrgencySchema = StringEnum(urgencies)
export const ShareScopeSchema = StringEnum(shareScopes)
export const ShareStatusSchema = StringEnum(shareStatuses)
export const ShareOutcomeSchema = StringEnum(shareOutcomes)

const summarySubjectFields = {
  ageGroup: StringEnum(ageGroups),
  gender: Type.Optional(StringEnum(genders)),
  languages: Type.Optional(Unique(Language, 20)),
  interpreterNeeded: Type.Optional(Type.Boolean())
}
const summaryExploitationFields = {
  types: Unique(StringEnum(exploitationTypes), exploitationTypes.length, 1),
  area: Text(200)
}

/** What each group holds, as stored and as returned. Groups a caller may not see are absent. */
export const ReferralSummary = Type.Object({
  subject: Type.Object(summarySubjectFields, strict),
  exploitation: Type.Object(summaryExploitationFields, strict)
}, strict)
export type ReferralSummary = Static<typeof ReferralSummary>

const identityFields = {
  givenName: Type.Optional(Text(200)),
  familyName: Type.Optional(Text(200)),
  aliases: Type.Optional(Unique(Text(200), 20)),
  dateOfBirth: Type.Optional(Type.String({ format: 'date' })),
  nationality: Type.Optional(Text(100))
}
export const ReferralIdentity = Type.Object(identityFields, strict)
export type ReferralIdentity = Static<typeof ReferralIdentity>

export const ReferralContact = Type.Object({
  phone: Type.Optional(Text(50)),
  address: Type.Optional(Text(1000)),
  safeToContact: Type.Optional(Type.Boolean()),
  notes: Type.Optional(Text(2000))
}, strict)
export type ReferralContact = Static<typeof ReferralContact>

const circumstancesFields = {
  indicators: Type.Optional(Unique(StringEnum(indicators), indicators.length)),
  narrative: Type.Optional(Text(20_000)),
  encounteredAt: Type.Optional(DateTime)
}
export const ReferralCircumstances = Type.Object(circumstancesFields, strict)
export type ReferralCircumstances = Static<typeof ReferralCircumstances>

export const ReferralConsent = Type.Object({
  basis: StringEnum(consentBases),
  recordedAt: Type.Optional(DateTime),
  method: Type.Optional(StringEnum(consentMethods)),
  sharingAllowedWith: Type.Optional(Type.Union([Type.Literal('any'), Unique(Uuid, 100, 1)]))
}, strict)
export type ReferralConsent = Static<typeof ReferralConsent>

/** The body of POST /v1/referrals. */
export const ReferralInput = Type.Object({
  subject: Type.Object({ ...summarySubjectFields, ...identityFields, contact: Type.Optional(ReferralContact) }, strict),
  exploitation: Type.Object({ ...summaryExploitationFields, ...circumstancesFields }, strict),
  urgency: UrgencySchema,
  needs: Type.Optional(Unique(AgencyServiceSchema, agencyServices.length)),
  consent: ReferralConsent
}, strict)
export type ReferralInput = Static<typeof ReferralInput>

/**
 * The body of PATCH /v1/referrals/:id: a JSON merge patch (RFC 7396) of the referral input —
 * objects merge, `null` removes a field, arrays replace. The merged result must be a valid
 * ReferralInput and keep to the legal-basis rules.
 */
export const ReferralPatch = Type.Object({
  subject: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  exploitation: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  urgency: Type.Optional(UrgencySchema),
  needs: Type.Optional(Unique(AgencyServiceSchema, agencyServices.length)),
  consent: Type.Optional(Type.Record(Type.String(), Type.Unknown()))
}, { ...strict, minProperties: 1 })
export type ReferralPatch = Static<typeof ReferralPatch>

export const Share = Type.Object({
  id: Uuid,
  referralId: Uuid,
  agencyId: Uuid,
  status: ShareStatusSchema,
  scopes: Type.Array(ShareScopeSchema),
  message: Type.Union([Type.String(), Type.Null()]),
  respondBy: DateTime,
  createdAt: DateTime,
  decidedAt: Type.Union([DateTime, Type.Null()]),
  decidedBy: Type.Union([Uuid, Type.Null()]),
  declineReason: Type.Union([Type.String(), Type.Null()]),
  outcome: Type.Union([ShareOutcomeSchema, Type.Null()])
})
export type Share = Static<typeof Share>

/**
 * A referral as one caller may see it. The origin agency gets every key; a recipient gets the
 * summary (and, once accepted, its share's scopes) with its own share only: keys it may not see are
 * absent, never null.
 */
/** The keys every view of a referral has, list items included. */
const referralHead = {
  id: Uuid,
  reference: Type.String(),
  status: StringEnum(referralStatuses),
  urgency: UrgencySchema,
  needs: Type.Array(AgencyServiceSchema),
  originAgencyId: Uuid,
  createdAt: DateTime
}

export const Referral = Type.Object({
  ...referralHead,
  createdBy: Type.Optional(Uuid),
  updatedAt: Type.Optional(DateTime),
  version: Type.Optional(Type.Integer()),
  subject: Type.Object({ ...summarySubjectFields, ...identityFields, contact: Type.Optional(ReferralContact) }),
  exploitation: Type.Object({ ...summaryExploitationFields, ...circumstancesFields }),
  consent: Type.Optional(ReferralConsent),
  closedAt: Type.Optional(Type.Union([DateTime, Type.Null()])),
  closedOutcome: Type.Optional(Type.Union([ShareOutcomeSchema, Type.Null()])),
  shares: Type.Array(Share)
})
export type Referral = Static<typeof Referral>

/** A list item: the summary only, never identity, contact or circumstances. */
export const ReferralListItem = Type.Object({
  ...referralHead,
  subject: Type.Object(summarySubjectFields),
  exploitation: Type.Object(summaryExploitationFields),
  /** For incoming referrals: this agency's share. */
  share: Type.Optional(Type.Object({ id: Uuid, status: ShareStatusSchema, respondBy: DateTime }))
})
export type ReferralListItem = Static<typeof ReferralListItem>
export const ReferralPage = Page(ReferralListItem)

export const ReferralListQuery = Type.Object({
  status: Type.Optional(StringEnum(referralStatuses)),
  direction: Type.Optional(StringEnum(['outgoing', 'incoming'] as const)),
  ...PageQuery
}, strict)
export type ReferralListQuery = Static<typeof ReferralListQuery>

export const ReferralClose = Type.Object({
  outcome: Type.Optional(ShareOutcomeSchema),
  note: Type.Optional(Text(10_000))
}, strict)
export type ReferralClose = Static<typeof ReferralClose>

export const ShareCreate = Type.Object({
  agencyId: Uuid,
  scopes: Type.Optional(Unique(ShareScopeSchema, shareScopes.length)),
  message: Type.Optional(Text(2000)),
  respondWithinHours: Type.Optional(Type.Integer({ minimum: 1, maximum: 720 }))
}, strict)
export type ShareCreate = Static<typeof ShareCreate>

export const ShareDecline = Type.Object({ reason: Text(2000) }, strict)
export const ShareWithdraw = Type.Object({ reason: Type.Optional(Text(2000)) }, strict)
export const ShareClose = Type.Object({ outcome: ShareOutcomeSchema, note: Type.Optional(Text(10_000)) }, strict)
export type ShareClose = Static<typeof ShareClose>

export const ReferralParams = Type.Object({ id: Uuid }, strict)
export const ShareParams = Type.Object({ id: Uuid, shareId: Uuid }, strict)

export const NoteCreate = Type.Object({
  body: Text(10_000),
  visibility: StringEnum(noteVisibilities)
}, strict)
export type NoteCreate = Static<typeof NoteCreate>

export const Note = Type.Object({
  id: Uuid,
  referralId: Uuid,
  agencyId: Uuid,
  authorId: Uuid,
  body: Type.String(),
  visibility: StringEnum(noteVisibilities),
  createdAt: DateTime
})
export type Note = Static<typeof Note>

export const TimelineEntry = Type.Object({
  id: Uuid,
  at: DateTime,
  type: Type.String({ description: 'referral.created, referral.updated, referral.closed, share.created, share.accepted, share.declined, share.withdrawn, share.closed, share.expired, note.created' }),
  actorAgencyId: Type.Union([Uuid, Type.Null()]),
  shareId: Type.Optional(Uuid),
  agencyId: Type.Optional(Uuid),
  note: Type.Optional(Note)
})
export type TimelineEntry = Static<typeof TimelineEntry>
/** The whole timeline in one page (`nextCursor` is always null): a referral's history is short. */
export const Timeline = Page(TimelineEntry)

// --- notifications and webhooks ---------------------------------------------------------------

export const NotificationListQuery = Type.Object({
  unread: Type.Optional(Type.Boolean()),
  ...PageQuery
}, strict)
export type NotificationListQuery = Static<typeof NotificationListQuery>

export const Notification = Type.Object({
  id: Uuid,
  type: StringEnum(notificationTypes),
  referralId: Type.Union([Uuid, Type.Null()]),
  shareId: Type.Union([Uuid, Type.Null()]),
  reference: Type.Union([Type.String(), Type.Null()]),
  createdAt: DateTime,
  readAt: Type.Union([DateTime, Type.Null()])
})
export const NotificationPage = Page(Notification)

export const WebhookCreate = Type.Object({
  url: Type.String({ minLength: 1, maxLength: 2000 }),
  events: Unique(StringEnum(outboxTypes), outboxTypes.length, 1)
}, strict)
export type WebhookCreate = Static<typeof WebhookCreate>

export const Webhook = Type.Object({
  id: Uuid,
  url: Type.String(),
  events: Type.Array(StringEnum(outboxTypes)),
  status: StringEnum(webhookStatuses),
  createdAt: DateTime
})
export type Webhook = Static<typeof Webhook>
/** Only in the answer to registration: the signing secret is shown once. */
export const WebhookWithSecret = Type.Object({ ...Webhook.properties, secret: Type.String() })
export const WebhookPage = Page(Webhook)

export const WebhookParams = Type.Object({ id: Uuid, webhookId: Uuid }, strict)
export const DeliveryParams = Type.Object({ id: Uuid, webhookId: Uuid, deliveryId: Uuid }, strict)

export const DeliveryListQuery = Type.Object({
  status: Type.Optional(StringEnum(deliveryStatuses)),
  ...PageQuery
}, strict)
export type DeliveryListQuery = Static<typeof DeliveryListQuery>

export const Delivery = Type.Object({
  id: Uuid,
  eventId: Uuid,
  type: StringEnum(outboxTypes),
  status: StringEnum(deliveryStatuses),
  attempts: Type.Integer(),
  lastStatusCode: Type.Union([Type.Integer(), Type.Null()]),
  lastError: Type.Union([Type.String(), Type.Null()]),
  createdAt: DateTime,
  lastAttemptAt: Type.Union([DateTime, Type.Null()]),
  deliveredAt: Type.Union([DateTime, Type.Null()])
})
export const DeliveryPage = Page(Delivery)
