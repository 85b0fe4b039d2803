/**
 * Who may see and do what to a referral: the specification (DESIGN.md section 1 "Who sees what" and
 * section 2, every /v1/referrals* route). Every user of four agencies, in every role, tries every
 * route on referrals in every share state, and each answer is compared with the tables below. The
 * tables are data read from the design; the application's policy module is never asked, so
 * loosening any one of its rules turns some cell red.
 */
import { randomUUID } from 'node:crypto'
import { type AuditAction, auditEvents, shares } from '@haven/schema'
import { eq, inArray } from 'drizzle-orm'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { buildHarness, type Harness, login, makeAgency, makeUser, referralBodies } from './helper.ts'

const agencyNames = ['police', 'ngoA', 'ngoB', 'la'] as const
type AgencyName = (typeof agencyNames)[number]
type RecipientName = Exclude<AgencyName, 'police'>
const roleNames = ['platform_admin', 'platform_auditor', 'agency_admin', 'auditor', 'referrer', 'caseworker'] as const
type RoleName = (typeof roleNames)[number]
type ContentRole = 'referrer' | 'caseworker'
/** "Only `referrer` and `caseworker` ever see case content": every other role is 403 on every route here. */
const contentRoles: readonly RoleName[] = ['referrer', 'caseworker']

type Scope = 'identity' | 'contact' | 'circumstances'
const everyScope: Scope[] = ['identity', 'contact', 'circumstances']

/** The triage card: reference, urgency, the summary group and the share (section 1; Referral shape, section 2). */
const triageKeys = [
  'id', 'reference', 'status', 'urgency', 'needs', 'originAgencyId', 'createdAt', 'shares',
  'subject', 'subject.ageGroup', 'subject.gender', 'subject.languages', 'subject.interpreterNeeded',
  'exploitation', 'exploitation.types', 'exploitation.area'
]
/** What each scope of an accepted share adds to the triage card. */
const scopeKeys: Record<Scope, string[]> = {
  identity: ['subject.givenName', 'subject.familyName', 'subject.aliases', 'subject.dateOfBirth', 'subject.nationality'],
  contact: ['subject.contact'],
  circumstances: ['exploitation.indicators', 'exploitation.narrative', 'exploitation.encounteredAt']
}
/** The full view's own keys: only the origin agency sees them. */
const originOnlyKeys = ['createdBy', 'updatedAt', 'version', 'consent', 'closedAt', 'closedOutcome']
const originKeys = [...triageKeys, ...everyScope.flatMap((scope) => scopeKeys[scope]), ...originOnlyKeys]
const shareKeys = ['id', 'referralId', 'agencyId', 'status', 'scopes', 'message', 'respondBy', 'createdAt', 'decidedAt', 'decidedBy', 'declineReason', 'outcome']
const noteKeys = ['id', 'referralId', 'agencyId', 'authorId', 'body', 'visibility', 'createdAt']
const timelineEntryKeys = ['id', 'at', 'type', 'actorAgencyId', 'shareId', 'agencyId', 'note']
/** A list item: the summary only, and for an incoming referral the agency's own share. */
const listItemKeys = [
  'id', 'reference', 'status', 'urgency', 'needs', 'originAgencyId', 'createdAt',
  'subject', 'subject.ageGroup', 'subject.gender', 'subject.languages', 'subject.interpreterNeeded',
  'exploitation', 'exploitation.types', 'exploitation.area'
]
const incomingListItemKeys = [...listItemKeys, 'share', 'share.id', 'share.status', 'share.respondBy']

type ShareState = 'pending' | 'accepted' | 'declined' | 'withdrawn' | 'closed' | 'expired'
/** An agency's standing towards a referral: the rows of section 1's table. */
type Standing = 'origin' | ShareState | 'none'
const seesReferral = (standing: Standing) => standing === 'origin' || standing === 'pending' || standing === 'accepted' || standing === 'closed'

interface ShareSpec {
  to: RecipientName
  scopes: Scope[]
  state: ShareState
  /** For `withdrawn`: accepted first, so the recipient had the case before losing it. */
  acceptedFirst?: boolean
}
interface NoteSpec { label: string, by: AgencyName, visibility: 'agency' | 'shared' }
interface Fixture {
  shares: ShareSpec[]
  standing: Record<AgencyName, Standing>
  notes: NoteSpec[]
  /**
   * The notes each agency that sees the referral finds on its timeline: its own agency's, and the
   * `shared` ones of others once it has more than a triage card.
   */
  timelineNotes: Partial<Record<AgencyName, string[]>>
}

const policeAgencyNote: NoteSpec = { label: 'police agency note', by: 'police', visibility: 'agency' }
const policeSharedNote: NoteSpec = { label: 'police shared note', by: 'police', visibility: 'shared' }
const ngoAAgencyNote: NoteSpec = { label: 'ngoA agency note', by: 'ngoA', visibility: 'agency' }
const ngoASharedNote: NoteSpec = { label: 'ngoA shared note', by: 'ngoA', visibility: 'shared' }

/**
 * Referrals by the police referrer (consent to share with any agency), one per share state of ngoA.
 * Shares that must not show their scopes (pending, declined, withdrawn, expired) carry every scope,
 * so that a looser rule would leak something visible.
 */
const fixtures = {
  noShare: {
    shares: [],
    standing: { police: 'origin', ngoA: 'none', ngoB: 'none', la: 'none' },
    notes: [policeAgencyNote],
    timelineNotes: { police: ['police agency note'] }
  },
  pending: {
    shares: [{ to: 'ngoA', scopes: everyScope, state: 'pending' }],
    standing: { police: 'origin', ngoA: 'pending', ngoB: 'none', la: 'none' },
    notes: [policeAgencyNote, policeSharedNote],
    // A triage card has no notes, not even shared ones.
    timelineNotes: { police: ['police agency note', 'police shared note'], ngoA: [] }
  },
  acceptedIdentity: {
    shares: [{ to: 'ngoA', scopes: ['identity'], state: 'accepted' }],
    standing: { police: 'origin', ngoA: 'accepted', ngoB: 'none', la: 'none' },
    notes: [],
    timelineNotes: { police: [], ngoA: [] }
  },
  acceptedFull: {
    shares: [{ to: 'ngoA', scopes: everyScope, state: 'accepted' }],
    standing: { police: 'origin', ngoA: 'accepted', ngoB: 'none', la: 'none' },
    notes: [policeAgencyNote, policeSharedNote, ngoAAgencyNote, ngoASharedNote],
    timelineNotes: {
      police: ['police agency note', 'police shared note', 'ngoA shared note'],
      ngoA: ['police shared note', 'ngoA agency note', 'ngoA shared note']
    }
  },
  declined: {
    shares: [{ to: 'ngoA', scopes: everyScope, state: 'declined' }],
    standing: { police: 'origin', ngoA: 'declined', ngoB: 'none', la: 'none' },
    notes: [policeSharedNote],
    timelineNotes: { police: ['police shared note'] }
  },
  withdrawnWhilePending: {
    shares: [{ to: 'ngoA', scopes: everyScope, state: 'withdrawn' }],
    standing: { police: 'origin', ngoA: 'withdrawn', ngoB: 'none', la: 'none' },
    notes: [policeSharedNote],
    timelineNotes: { police: ['police shared note'] }
  },
  withdrawnAfterAccepting: {
    shares: [{ to: 'ngoA', scopes: everyScope, state: 'withdrawn', acceptedFirst: true }],
    standing: { police: 'origin', ngoA: 'withdrawn', ngoB: 'none', la: 'none' },
    notes: [ngoASharedNote],
    timelineNotes: { police: ['ngoA shared note'] }
  },
  closed: {
    // Accepted, notes written, then closed with an outcome: read-only, still through its scopes.
    shares: [{ to: 'ngoA', scopes: ['circumstances'], state: 'closed' }],
    standing: { police: 'origin', ngoA: 'closed', ngoB: 'none', la: 'none' },
    notes: [policeSharedNote, ngoAAgencyNote, ngoASharedNote],
    timelineNotes: {
      police: ['police shared note', 'ngoA shared note'],
      ngoA: ['police shared note', 'ngoA agency note', 'ngoA shared note']
    }
  },
  expired: {
    shares: [{ to: 'ngoA', scopes: everyScope, state: 'expired' }],
    standing: { police: 'origin', ngoA: 'expired', ngoB: 'none', la: 'none' },
    notes: [],
    timelineNotes: { police: [] }
  },
  twoRecipients: {
    // Each recipient sees its own share only, never the other's.
    shares: [{ to: 'ngoB', scopes: everyScope, state: 'pending' }, { to: 'la', scopes: ['contact'], state: 'accepted' }],
    standing: { police: 'origin', ngoA: 'none', ngoB: 'pending', la: 'accepted' },
    notes: [policeAgencyNote, policeSharedNote, { label: 'la agency note', by: 'la', visibility: 'agency' }, { label: 'la shared note', by: 'la', visibility: 'shared' }],
    timelineNotes: {
      police: ['police agency note', 'police shared note', 'la shared note'],
      ngoB: [],
      la: ['police shared note', 'la agency note', 'la shared note']
    }
  }
} satisfies Record<string, Fixture>
type FixtureName = keyof typeof fixtures
const fixtureNames = Object.keys(fixtures) as FixtureName[]
const fixtureOf = (name: FixtureName): Fixture => fixtures[name]

type ReferralRoute = 'read' | 'timeline' | 'update' | 'close' | 'share' | 'note'
type ShareRoute = 'accept' | 'decline' | 'withdraw' | 'closeShare'

/** A referrer's or caseworker's status on each referral route (both alike), by its agency's standing. */
const referralRouteStatus: Record<ReferralRoute, Record<Standing, number>> = {
  read: { origin: 200, pending: 200, accepted: 200, closed: 200, declined: 404, withdrawn: 404, expired: 404, none: 404 },
  timeline: { origin: 200, pending: 200, accepted: 200, closed: 200, declined: 404, withdrawn: 404, expired: 404, none: 404 },
  update: { origin: 200, pending: 403, accepted: 403, closed: 403, declined: 404, withdrawn: 404, expired: 404, none: 404 },
  close: { origin: 200, pending: 403, accepted: 403, closed: 403, declined: 404, withdrawn: 404, expired: 404, none: 404 },
  share: { origin: 201, pending: 403, accepted: 403, closed: 403, declined: 404, withdrawn: 404, expired: 404, none: 404 },
  note: { origin: 201, pending: 403, accepted: 201, closed: 403, declined: 404, withdrawn: 404, expired: 404, none: 404 }
}

type ByRole = Record<ContentRole, number>
const both = (status: number): ByRole => ({ referrer: status, caseworker: status })
const caseworkerOnly = (status: number): ByRole => ({ referrer: 403, caseworker: status })
/**
 * The recipient's own share has ended (declined, withdrawn, expired): the referral is no longer
 * visible (404), except that a caseworker answering it (again) learns only what it already knows
 * from the state machine, 409 — how the loser of two concurrent answers is told (section 1).
 */
const endedForCaseworker = (status: number): ByRole => ({ referrer: 404, caseworker: status })
type UnknownShare = 'unknown'

/**
 * A referrer's and a caseworker's status on each share route, by the share's state: for the origin
 * agency, and for the agency the share is addressed to. Any other agency gets 404 (it sees neither
 * the share nor, perhaps, the referral). `unknown` is a share id that does not exist, on a referral
 * the origin sees. The role is checked before the state: a role that may never do it gets 403.
 */
const shareRouteStatus: Record<ShareRoute, { origin: Record<ShareState | UnknownShare, ByRole>, recipient: Record<ShareState, ByRole> }> = {
  accept: {
    origin: { pending: both(403), accepted: both(403), closed: both(403), declined: both(403), withdrawn: both(403), expired: both(403), unknown: both(404) },
    recipient: { pending: caseworkerOnly(200), accepted: caseworkerOnly(409), closed: caseworkerOnly(409), declined: endedForCaseworker(409), withdrawn: endedForCaseworker(409), expired: endedForCaseworker(409) }
  },
  decline: {
    origin: { pending: both(403), accepted: both(403), closed: both(403), declined: both(403), withdrawn: both(403), expired: both(403), unknown: both(404) },
    recipient: { pending: caseworkerOnly(200), accepted: caseworkerOnly(409), closed: caseworkerOnly(409), declined: endedForCaseworker(409), withdrawn: endedForCaseworker(409), expired: endedForCaseworker(409) }
  },
  withdraw: {
    origin: { pending: both(200), accepted: both(200), closed: both(409), declined: both(409), withdrawn: both(409), expired: both(409), unknown: both(404) },
    recipient: { pending: both(403), accepted: both(403), closed: both(403), declined: both(404), withdrawn: both(404), expired: both(404) }
  },
  closeShare: {
    origin: { pending: both(403), accepted: both(403), closed: both(403), declined: both(403), withdrawn: both(403), expired: both(403), unknown: both(404) },
    recipient: { pending: caseworkerOnly(409), accepted: caseworkerOnly(200), closed: caseworkerOnly(409), declined: endedForCaseworker(409), withdrawn: endedForCaseworker(409), expired: endedForCaseworker(409) }
  }
}
const bystanderStatus = 404

/** Which referrals each agency's list holds (only those it may see), by `direction`. */
const listed: Record<'all' | 'outgoing' | 'incoming', Record<AgencyName, FixtureName[]>> = {
  all: {
    police: fixtureNames,
    ngoA: ['pending', 'acceptedIdentity', 'acceptedFull', 'closed'],
    ngoB: ['twoRecipients'],
    la: ['twoRecipients']
  },
  outgoing: { police: fixtureNames, ngoA: [], ngoB: [], la: [] },
  incoming: {
    police: [],
    ngoA: ['pending', 'acceptedIdentity', 'acceptedFull', 'closed'],
    ngoB: ['twoRecipients'],
    la: ['twoRecipients']
  }
}

interface RouteRequest { action: AuditAction, title: string, options: (referralId: string, shareId: string) => InjectOptions }

const referralRequests = (spareAgencyId: string, etags: Map<string, string>): Record<ReferralRoute, RouteRequest> => ({
  read: { action: 'referral.read', title: 'GET /v1/referrals/:id', options: (id) => ({ method: 'GET', url: `/v1/referrals/${id}` }) },
  timeline: { action: 'timeline.read', title: 'GET /v1/referrals/:id/timeline', options: (id) => ({ method: 'GET', url: `/v1/referrals/${id}/timeline` }) },
  update: {
    action: 'referral.update',
    title: 'PATCH /v1/referrals/:id',
    options: (id) => ({ method: 'PATCH', url: `/v1/referrals/${id}`, headers: { 'if-match': etags.get(id) ?? '"1"' }, payload: { urgency: 'immediate' } })
  },
  close: { action: 'referral.close', title: 'POST /v1/referrals/:id/close', options: (id) => ({ method: 'POST', url: `/v1/referrals/${id}/close`, payload: { outcome: 'supported' } }) },
  share: {
    action: 'share.create',
    title: 'POST /v1/referrals/:id/shares',
    options: (id) => ({ method: 'POST', url: `/v1/referrals/${id}/shares`, payload: { agencyId: spareAgencyId, scopes: ['identity'] } })
  },
  note: { action: 'note.create', title: 'POST /v1/referrals/:id/notes', options: (id) => ({ method: 'POST', url: `/v1/referrals/${id}/notes`, payload: { body: 'A matrix note', visibility: 'shared' } }) }
})

const shareRequests: Record<ShareRoute, RouteRequest> = {
  accept: {
    action: 'share.accept',
    title: 'POST /v1/referrals/:id/shares/:shareId/accept',
    options: (id, shareId) => ({ method: 'POST', url: `/v1/referrals/${id}/shares/${shareId}/accept`, payload: {} })
  },
  decline: {
    action: 'share.decline',
    title: 'POST /v1/referrals/:id/shares/:shareId/decline',
    options: (id, shareId) => ({ method: 'POST', url: `/v1/referrals/${id}/shares/${shareId}/decline`, payload: { reason: 'No capacity this month' } })
  },
  withdraw: {
    action: 'share.withdraw',
    title: 'POST /v1/referrals/:id/shares/:shareId/withdraw',
    options: (id, shareId) => ({ method: 'POST', url: `/v1/referrals/${id}/shares/${shareId}/withdraw`, payload: {} })
  },
  closeShare: {
    action: 'share.close',
    title: 'POST /v1/referrals/:id/shares/:shareId/close',
    options: (id, shareId) => ({ method: 'POST', url: `/v1/referrals/${id}/shares/${shareId}/close`, payload: { outcome: 'supported' } })
  }
}

interface Sent { res: LightMyRequestResponse, requestId: string }
interface Person {
  name: string
  agency: AgencyName
  role: RoleName
  send: (options: InjectOptions) => Promise<Sent>
}
interface Built { name: FixtureName, id: string, shareIds: string[] }

interface World {
  h: Harness
  agencyIds: Record<AgencyName, string>
  spareAgencyId: string
  people: Person[]
  person: (agency: AgencyName, role: RoleName) => Person
  /** Ids of referrals, shares and notes, by the names the tables use. */
  labels: Map<string, string>
  etags: Map<string, string>
}

async function buildWorld (h: Harness): Promise<World> {
  const kinds = { police: 'police', ngoA: 'ngo', ngoB: 'ngo', la: 'local_authority' } as const
  const agencyIds = {} as Record<AgencyName, string>
  for (const name of agencyNames) agencyIds[name] = (await makeAgency(h, { kind: kinds[name], name: `Matrix ${name} ${randomUUID().slice(0, 8)}` })).id
  // The agency new shares go to: no users, so no cell of the matrix looks through it.
  const spareAgencyId = (await makeAgency(h, { kind: 'ngo' })).id
  const people = await Promise.all(agencyNames.flatMap((agency) => roleNames.map(async (role): Promise<Person> => {
    const user = await makeUser(h, agencyIds[agency], [role])
    const { accessToken } = await login(h, user.email)
    return {
      name: `${agency} ${role}`,
      agency,
      role,
      send: async (options) => {
        // Our own request id, to find the audit event this very request wrote.
        const requestId = `matrix-${randomUUID()}`
        const res = await h.app.inject({
          remoteAddress: h.ip,
          ...options,
          headers: { ...options.headers, authorization: `Bearer ${accessToken}`, 'x-request-id': requestId }
        })
        return { res, requestId }
      }
    }
  })))
  const person = (agency: AgencyName, role: RoleName) => {
    const found = people.find((p) => p.agency === agency && p.role === role)
    if (found === undefined) throw new Error(`no ${agency} ${role}`)
    return found
  }
  const labels = new Map<string, string>(Object.entries(agencyIds).map(([name, id]) => [id, name]))
  return { h, agencyIds, spareAgencyId, people, person, labels, etags: new Map() }
}

async function must (sent: Promise<Sent>, status: number, what: string) {
  const { res } = await sent
  if (res.statusCode !== status) throw new Error(`setup: ${what} answered ${res.statusCode}: ${res.body}`)
  return res
}

const shareLabel = (fixture: FixtureName, share: ShareSpec) => `${fixture}/${share.to}`

/** A referral in the given state, built through the API (apart from expiry). */
async function buildReferral (world: World, name: FixtureName, { withNotes }: { withNotes: boolean }): Promise<Built> {
  const spec = fixtureOf(name)
  const police = world.person('police', 'referrer')
  const created = await must(police.send({ method: 'POST', url: '/v1/referrals', payload: referralBodies.consent('any') }), 201, 'create referral')
  const id = created.json<{ id: string }>().id
  world.labels.set(id, name)
  const shareIds: string[] = []
  for (const share of spec.shares) {
    const res = await must(police.send({ method: 'POST', url: `/v1/referrals/${id}/shares`, payload: { agencyId: world.agencyIds[share.to], scopes: share.scopes } }), 201, 'share')
    const shareId = res.json<{ id: string }>().id
    shareIds.push(shareId)
    world.labels.set(shareId, shareLabel(name, share))
  }
  const recipientRequest = (share: ShareSpec, shareId: string, route: ShareRoute) =>
    world.person(share.to, 'caseworker').send(shareRequests[route].options(id, shareId))
  for (const [i, share] of spec.shares.entries()) {
    const shareId = shareIds[i] ?? ''
    if (share.state === 'accepted' || share.state === 'closed' || share.acceptedFirst === true) await must(recipientRequest(share, shareId, 'accept'), 200, 'accept')
  }
  if (withNotes) {
    for (const note of spec.notes) {
      const res = await must(world.person(note.by, 'caseworker').send({ method: 'POST', url: `/v1/referrals/${id}/notes`, payload: { body: `Matrix: ${note.label}`, visibility: note.visibility } }), 201, 'note')
      world.labels.set(res.json<{ id: string }>().id, note.label)
    }
  }
  for (const [i, share] of spec.shares.entries()) {
    const shareId = shareIds[i] ?? ''
    if (share.state === 'closed') await must(recipientRequest(share, shareId, 'closeShare'), 200, 'close share')
    if (share.state === 'declined') await must(recipientRequest(share, shareId, 'decline'), 200, 'decline')
    if (share.state === 'withdrawn') await must(police.send(shareRequests.withdraw.options(id, shareId)), 200, 'withdraw')
    // The sweeper that expires pending shares past their respondBy is not built yet: the state is set
    // directly, as the sweeper would leave it.
    if (share.state === 'expired') await world.h.database.db.update(shares).set({ status: 'expired' }).where(eq(shares.id, shareId))
  }
  const read = await must(police.send({ method: 'GET', url: `/v1/referrals/${id}` }), 200, 'read back')
  world.etags.set(id, String(read.headers.etag))
  return { name, id, shareIds }
}

/** What a cell expects; the observed answer is reduced to the same fields. */
interface Outcome {
  status: number
  cacheControl?: string
  keys?: string[]
  shares?: string[]
  mentionsCanary?: boolean
  timeline?: { notes: string[], shares: string[], agencies: string[], strayKeys: string[] }
  items?: Record<string, { keys: string[], share?: string }>
  /** This request's audit events under the route's action, as `action outcome referral`. */
  audit?: string[]
  /** A refusal's problem, requestId aside: identical to the one for an id that does not exist. */
  problem?: Record<string, unknown>
}

type Json = Record<string, unknown>
const sorted = (values: Iterable<string>) => [...new Set(values)].sort()
const isObject = (value: unknown): value is Json => value !== null && typeof value === 'object' && !Array.isArray(value)

/** Top-level keys, and one level into subject, exploitation and a list item's share. */
function keyPaths (body: unknown): string[] {
  if (!isObject(body)) return ['(not an object)']
  const paths = Object.keys(body)
  for (const group of ['subject', 'exploitation', 'share']) {
    const value = body[group]
    if (isObject(value)) paths.push(...Object.keys(value).map((key) => `${group}.${key}`))
  }
  return sorted(paths)
}

function problemOf (res: LightMyRequestResponse): Json {
  let body: Json
  try {
    body = res.json<Json>()
  } catch {
    return { body: res.body }
  }
  const rest = { ...body }
  delete rest.requestId
  return { ...rest, contentType: res.headers['content-type'] }
}

type AuditRow = typeof auditEvents.$inferSelect

function observe (world: World, expected: Outcome, { res, requestId }: Sent, events: AuditRow[], action: AuditAction): Outcome {
  const label = (id: string | null | undefined) => id === null || id === undefined ? '-' : world.labels.get(id) ?? `unknown ${id}`
  const found: Outcome = { status: res.statusCode }
  const ok = res.statusCode >= 200 && res.statusCode < 300
  const body = (): unknown => { try { return res.json() } catch { return undefined } }
  if (expected.cacheControl !== undefined) found.cacheControl = String(res.headers['cache-control'])
  if (expected.keys !== undefined && ok) found.keys = keyPaths(body())
  if (expected.shares !== undefined && ok) {
    const list = (body() as { shares?: Json[] } | undefined)?.shares ?? []
    const keys = (share: Json) => sorted(Object.keys(share)).join(',')
    found.shares = sorted(list.map((share) => keys(share) === sorted(shareKeys).join(',') ? label(String(share.id)) : `${label(String(share.id))} with keys ${keys(share)}`))
  }
  if (expected.mentionsCanary !== undefined) found.mentionsCanary = res.body.includes('Canary')
  if (expected.timeline !== undefined && ok) {
    const items = (body() as { items?: Json[] } | undefined)?.items ?? []
    const notes = items.flatMap((item) => isObject(item.note) ? [item.note] : [])
    found.timeline = {
      notes: sorted(notes.map((note) => label(String(note.id)))),
      shares: sorted(items.flatMap((item) => typeof item.shareId === 'string' ? [label(item.shareId)] : [])),
      agencies: sorted(items.flatMap((item) => typeof item.agencyId === 'string' ? [label(item.agencyId)] : [])),
      strayKeys: sorted([
        ...items.flatMap((item) => Object.keys(item).filter((key) => !timelineEntryKeys.includes(key))),
        ...notes.flatMap((note) => sorted(Object.keys(note)).join(',') === sorted(noteKeys).join(',') ? [] : [`note: ${sorted(Object.keys(note)).join(',')}`])
      ])
    }
  }
  if (expected.items !== undefined && ok) {
    const items = (body() as { items?: Json[] } | undefined)?.items ?? []
    found.items = Object.fromEntries(items.map((item) => {
      const share = isObject(item.share) ? { share: `${label(String(item.share.id))} ${String(item.share.status)}` } : {}
      return [label(String(item.id)), { keys: keyPaths(item), ...share }]
    }))
  }
  if (expected.audit !== undefined) {
    found.audit = events.filter((e) => e.requestId === requestId && e.action === action).map((e) => `${e.action} ${e.outcome} ${label(e.referralId)}`)
  }
  if (expected.problem !== undefined) found.problem = problemOf(res)
  return found
}

interface Cell {
  name: string
  route: string
  person: Person
  fixture?: string
  action: AuditAction
  expect: () => Promise<Outcome>
  send: () => Promise<Sent>
}

/** Runs cells in modest concurrent batches; one assertion per cell. */
async function runCells (t: Test, world: World, cells: Cell[], batchSize = 24) {
  for (let i = 0; i < cells.length; i += batchSize) {
    const batch = cells.slice(i, i + batchSize)
    const answers = await Promise.all(batch.map(async (cell) => {
      const [expected, sent] = await Promise.all([cell.expect(), cell.send()])
      return { cell, expected, sent }
    }))
    const events = await world.h.database.db.select().from(auditEvents).where(inArray(auditEvents.requestId, answers.map((a) => a.sent.requestId)))
    for (const { cell, expected, sent } of answers) {
      t.same(observe(world, expected, sent, events, cell.action), expected, cell.name)
    }
  }
}

/** The problem a caller gets for ids that do not exist, once per caller and request. */
function baselines () {
  const memo = new Map<string, Promise<Json>>()
  return async (person: Person, options: InjectOptions) => {
    const key = `${person.name} ${String(options.method)} ${String(options.url)}`
    let found = memo.get(key)
    if (found === undefined) {
      found = person.send(options).then(({ res }) => problemOf(res))
      memo.set(key, found)
    }
    return await found
  }
}

const isContent = (person: Person) => contentRoles.includes(person.role)
const isSuccess = (status: number) => status >= 200 && status < 300

t.test('access to referrals, user by user, referral by referral, route by route', async (t) => {
  const h = await buildHarness(t)
  const world = await buildWorld(h)
  const built = {} as Record<FixtureName, Built>
  for (const name of fixtureNames) built[name] = await buildReferral(world, name, { withNotes: true })
  const referralRoutes = referralRequests(world.spareAgencyId, world.etags)
  const problemFor = baselines()
  const randomReferral = randomUUID()
  const randomShare = randomUUID()

  /** The agency's own share of a fixture, if it has one. */
  const ownShare = (name: FixtureName, agency: AgencyName) => fixtureOf(name).shares.find((share) => share.to === agency)

  /** Status, body shape, cache header, audit and refusal body of one referral-route cell. */
  async function expectedOn (route: ReferralRoute, person: Person, name: FixtureName): Promise<Outcome> {
    const fixture = fixtureOf(name)
    const standing = fixture.standing[person.agency]
    const request = referralRoutes[route]
    if (!isContent(person)) {
      return { status: 403, audit: [`${request.action} denied ${name}`], problem: await problemFor(person, request.options(randomReferral, randomShare)) }
    }
    const status = referralRouteStatus[route][standing]
    if (status === 404) return { status, audit: [`${request.action} denied ${name}`], problem: await problemFor(person, request.options(randomReferral, randomShare)) }
    if (status === 403) return { status, audit: [`${request.action} denied ${name}`] }
    const success: Outcome = { status, cacheControl: 'no-store', audit: [`${request.action} success ${name}`] }
    const allShares = sorted(fixture.shares.map((share) => shareLabel(name, share)))
    const own = ownShare(name, person.agency)
    const visibleShares = standing === 'origin' ? allShares : own !== undefined ? [shareLabel(name, own)] : []
    switch (route) {
      case 'read': {
        const scopes = standing === 'accepted' || standing === 'closed' ? own?.scopes ?? [] : []
        const keys = standing === 'origin' ? originKeys : [...triageKeys, ...scopes.flatMap((scope) => scopeKeys[scope])]
        return { ...success, keys: sorted(keys), shares: visibleShares, mentionsCanary: standing === 'origin' || scopes.length > 0 }
      }
      case 'timeline':
        return {
          ...success,
          mentionsCanary: false,
          timeline: {
            notes: sorted(fixture.timelineNotes[person.agency] ?? ['(the table names no notes for this agency)']),
            shares: visibleShares,
            agencies: sorted(standing === 'origin' ? fixture.shares.map((share) => share.to) : [person.agency]),
            strayKeys: []
          }
        }
      case 'update':
      case 'close':
        return { ...success, keys: sorted(originKeys), shares: allShares }
      case 'share':
        return { ...success, keys: sorted(shareKeys) }
      case 'note':
        return { ...success, keys: sorted(noteKeys) }
    }
  }

  function referralCells (route: ReferralRoute, { mutates }: { mutates: boolean }): Cell[] {
    const request = referralRoutes[route]
    return world.people.flatMap((person) => fixtureNames.map((name): Cell => {
      let expected: Promise<Outcome> | undefined
      const expect = async () => await (expected ??= expectedOn(route, person, name))
      return {
        name: `${person.name}: ${request.title} on ${name}`,
        route,
        person,
        fixture: name,
        action: request.action,
        expect,
        send: async () => {
          // A change that should succeed runs on a fresh referral in the same state, so the
          // fixture every other cell reads stays as built.
          const target = mutates && isSuccess((await expect()).status) ? await buildReferral(world, name, { withNotes: false }) : built[name]
          return await person.send(request.options(target.id, randomShare))
        }
      }
    }))
  }

  interface ShareTarget { fixture: FixtureName, label: string, to: RecipientName | null, state: ShareState | UnknownShare, index: number }
  const shareTargets: ShareTarget[] = [
    { fixture: 'noShare', label: 'noShare/unknown share', to: null, state: 'unknown', index: -1 },
    ...fixtureNames.flatMap((name) => fixtureOf(name).shares.map((share, index): ShareTarget => ({ fixture: name, label: shareLabel(name, share), to: share.to, state: share.state, index })))
  ]

  function shareCells (route: ShareRoute): Cell[] {
    const request = shareRequests[route]
    return world.people.flatMap((person) => shareTargets.map((target): Cell => {
      const standing = fixtureOf(target.fixture).standing[person.agency]
      const relation = person.agency === 'police' ? 'origin' : person.agency === target.to ? 'recipient' : 'bystander'
      let expected: Promise<Outcome> | undefined
      const expect = async () => await (expected ??= (async (): Promise<Outcome> => {
        const denied = [`${request.action} denied ${target.fixture}`]
        // A refusal reads like the one for ids that do not exist: an unknown share on a referral the
        // caller sees, or an unknown referral.
        const unknownIds = seesReferral(standing) ? request.options(built[target.fixture].id, randomShare) : request.options(randomReferral, randomShare)
        if (!isContent(person)) return { status: 403, audit: denied, problem: await problemFor(person, request.options(randomReferral, randomShare)) }
        const role = person.role as ContentRole
        const status = relation === 'origin'
          ? shareRouteStatus[route].origin[target.state][role]
          : relation === 'recipient' && target.state !== 'unknown' ? shareRouteStatus[route].recipient[target.state][role] : bystanderStatus
        if (status === 404) return { status, audit: denied, problem: await problemFor(person, unknownIds) }
        if (status === 403) return { status, audit: denied }
        if (status === 409) return { status }
        return { status, cacheControl: 'no-store', keys: sorted(shareKeys), audit: [`${request.action} success ${target.fixture}`] }
      })())
      return {
        name: `${person.name}: ${request.title} on ${target.label} (${target.state})`,
        route,
        person,
        fixture: target.label,
        action: request.action,
        expect,
        send: async () => {
          const referral = isSuccess((await expect()).status) ? await buildReferral(world, target.fixture, { withNotes: false }) : built[target.fixture]
          return await person.send(request.options(referral.id, target.index < 0 ? randomShare : referral.shareIds[target.index] ?? randomShare))
        }
      }
    }))
  }

  // Reads first: every change below happens after, on fresh referrals.
  t.test('GET /v1/referrals/:id: the view section 1 allows, or 403/404', async (t) => {
    await runCells(t, world, referralCells('read', { mutates: false }))
  })

  t.test('GET /v1/referrals/:id/timeline: as GET referral; notes and shares the caller may see', async (t) => {
    await runCells(t, world, referralCells('timeline', { mutates: false }))
  })

  t.test('GET /v1/referrals: the referrals each agency may see, summaries only', async (t) => {
    const directions = [['all', ''], ['outgoing', '?direction=outgoing'], ['incoming', '?direction=incoming']] as const
    const cells = world.people.flatMap((person) => directions.map(([direction, query]): Cell => ({
      name: `${person.name}: GET /v1/referrals${query}`,
      route: 'list',
      person,
      action: 'referral.list',
      expect: async () => {
        if (!isContent(person)) return { status: 403, audit: ['referral.list denied -'] }
        const items = Object.fromEntries(listed[direction][person.agency].map((name) => {
          const own = ownShare(name, person.agency)
          return [name, own === undefined ? { keys: sorted(listItemKeys) } : { keys: sorted(incomingListItemKeys), share: `${shareLabel(name, own)} ${own.state}` }]
        }))
        return { status: 200, cacheControl: 'no-store', items, mentionsCanary: false }
      },
      send: async () => await person.send({ method: 'GET', url: `/v1/referrals${query}` })
    })))
    await runCells(t, world, cells)
  })

  t.test('PATCH /v1/referrals/:id: the origin agency only', async (t) => {
    await runCells(t, world, referralCells('update', { mutates: true }))
  })

  t.test('POST /v1/referrals/:id/close: the origin agency only', async (t) => {
    await runCells(t, world, referralCells('close', { mutates: true }))
  })

  t.test('POST /v1/referrals/:id/shares: the origin agency only', async (t) => {
    await runCells(t, world, referralCells('share', { mutates: true }))
  })

  t.test('POST /v1/referrals/:id/notes: the origin agency or an accepted recipient', async (t) => {
    await runCells(t, world, referralCells('note', { mutates: true }))
  })

  for (const route of ['accept', 'decline', 'withdraw', 'closeShare'] as const) {
    t.test(`${shareRequests[route].title}: ${route === 'withdraw' ? 'the origin agency' : 'caseworkers of the agency it is addressed to'}`, async (t) => {
      await runCells(t, world, shareCells(route))
    })
  }

  // Last: the referrals it creates would change every agency's list.
  t.test('POST /v1/referrals: referrers only', async (t) => {
    const cells = world.people.map((person): Cell => ({
      name: `${person.name}: POST /v1/referrals`,
      route: 'create',
      person,
      action: 'referral.create',
      expect: async () => person.role === 'referrer'
        ? { status: 201, cacheControl: 'no-store', keys: sorted(originKeys), audit: ['referral.create success created'] }
        : { status: 403, audit: ['referral.create denied -'] },
      send: async () => {
        const sent = await person.send({ method: 'POST', url: '/v1/referrals', payload: referralBodies.consent('any') })
        if (sent.res.statusCode === 201) world.labels.set(sent.res.json<{ id: string }>().id, 'created')
        return sent
      }
    }))
    await runCells(t, world, cells)
  })
})
