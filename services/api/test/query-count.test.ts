/**
 * No N+1 on the referral routes (DESIGN.md section 2): every referral, share and note route sends
 * PostgreSQL the same number of statements for one request whether the referral has one share or
 * eight, one note or ten, and whether the list returns two referrals or thirty.
 *
 * Each route is measured once in a small situation and once in a large one, built through the API
 * beforehand; only the statements sent between the start and the end of the measured request are
 * counted. The count includes everything postgres.js sends: the authentication hook's user read,
 * `begin` and `commit` of the transaction, and the audit and outbox inserts. The driver's own
 * array-type lookup on a new connection is not the app's and is left out; the pool's connections
 * are all opened before measuring, so it should not occur at all.
 */
import type { Referral, ReferralListItem, Share, TimelineEntry } from '@haven/schema'
import { sql } from 'drizzle-orm'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { buildHarness, referralBodies, signedIn } from './helper.ts'

type SignedIn = Awaited<ReturnType<typeof signedIn>>
type Size = 'small' | 'large'

const sizes = {
  small: { shares: 1, notes: 1, referrals: 2 },
  large: { shares: 8, notes: 10, referrals: 30 }
} as const satisfies Record<Size, { shares: number, notes: number, referrals: number }>

/**
 * Routes known to send more statements as the referral grows, with what grows. Their equality
 * assertion stays strict but is marked todo, so it is reported without failing the run.
 */
const knownGrowth: Record<string, string> = {}

/** postgres.js reads the server's array types on each new connection: the driver's, not the app's. */
const driverHousekeeping = /^\s*select b\.oid, b\.typarray\s/

let recording: string[] | null = null
const h = await buildHarness(t, { onQuery: (statement) => { recording?.push(statement) } })

// Open every connection of the pool (max 4) now, so none is opened, and typed, during a measurement.
await Promise.all([1, 2, 3, 4].map(async () => await h.database.db.execute(sql`select pg_sleep(0.05)`)))

interface Measured { status: number, statements: string[] }
const results = new Map<string, Partial<Record<Size, Measured>>>()

/** One request, and the statements it sent. */
async function measure (who: SignedIn, options: InjectOptions): Promise<{ res: LightMyRequestResponse, statements: string[] }> {
  const seen: string[] = []
  recording = seen
  let res: LightMyRequestResponse
  try {
    res = await who.request(options)
  } finally {
    recording = null
  }
  return { res, statements: seen.filter((statement) => !driverHousekeeping.test(statement)) }
}

/** Measures a route in one situation: checks the answer and records the statements under the route. */
async function measureRoute (t: Test, route: string, size: Size, who: SignedIn, options: InjectOptions, status: number) {
  const { res, statements } = await measure(who, options)
  t.equal(res.statusCode, status, `${size}: answers ${status}`, res.statusCode !== status ? { body: res.body } : {})
  t.match(statements[0] ?? '', /from "users" inner join "agencies"/, `${size}: the first statement is the caller's user read`)
  results.set(route, { ...results.get(route), [size]: { status: res.statusCode, statements } })
  return res
}

/** Small and large must send the same number of statements. */
function sameCount (t: Test, route: string) {
  const { small, large } = results.get(route) ?? {}
  if (small === undefined || large === undefined) throw new Error(`${route} was not measured in both situations`)
  const todo = knownGrowth[route]
  t.equal(large.statements.length, small.statements.length,
    `${route}: ${small.statements.length} statements small, ${large.statements.length} large`,
    todo !== undefined ? { todo } : {})
}

const ok = (res: LightMyRequestResponse, status: number) => {
  if (res.statusCode !== status) throw new Error(`setup: expected ${status}, got ${res.statusCode} ${res.body}`)
  return res
}

/** An origin agency (a referrer who is also a caseworker) and caseworkers of `shares` recipient agencies, plus one spare agency. */
interface World { size: Size, origin: SignedIn, recipients: SignedIn[], spare: SignedIn }

async function makeWorld (size: Size): Promise<World> {
  const origin = await signedIn(h, ['referrer', 'caseworker'])
  const recipients: SignedIn[] = []
  for (let i = 0; i < sizes[size].shares; i++) recipients.push(await signedIn(h, ['caseworker']))
  const spare = await signedIn(h, ['caseworker'])
  return { size, origin, recipients, spare }
}

/** Consent to share with every agency of the world, listed: the rules check looks each one up. */
const consentBody = (world: World) => referralBodies.consent([...world.recipients.map((r) => r.agencyId), world.spare.agencyId])

interface Case { referralId: string, shareIds: string[], notesOriginSees: number }

/**
 * A referral of the world's origin, shared with each recipient (share i with recipient i), and then
 * notes. Share 0, the one the measured request acts on or is seen through, is left `first`. In the
 * large situation the others sit in every state a share can be in: accepted, declined, closed,
 * withdrawn and pending. Notes are written in turn by the origin and the agencies that accepted.
 */
async function makeCase (world: World, first: 'pending' | 'accepted'): Promise<Case> {
  const { origin, recipients } = world
  const referral = ok(await origin.request({ method: 'POST', url: '/v1/referrals', payload: consentBody(world) }), 201).json<Referral>()
  const base = `/v1/referrals/${referral.id}`
  const shareIds: string[] = []
  for (const recipient of recipients) {
    const share = ok(await origin.request({
      method: 'POST', url: `${base}/shares`, payload: { agencyId: recipient.agencyId, scopes: ['identity', 'contact', 'circumstances'], message: 'Canary share message' }
    }), 201).json<Share>()
    shareIds.push(share.id)
  }
  const act = async (who: SignedIn, i: number, action: string, payload?: object) =>
    ok(await who.request({ method: 'POST', url: `${base}/shares/${shareIds[i]}/${action}`, ...(payload !== undefined ? { payload } : {}) }), 200)
  const writers = [origin]
  if (first === 'accepted') {
    await act(recipients[0] as SignedIn, 0, 'accept')
    writers.push(recipients[0] as SignedIn)
  }
  for (let i = 1; i < recipients.length; i++) {
    const recipient = recipients[i] as SignedIn
    switch (i % 5) {
      case 1: await act(recipient, i, 'accept'); writers.push(recipient); break
      case 2: await act(recipient, i, 'decline', { reason: 'Canary: no capacity' }); break
      case 3: await act(recipient, i, 'accept'); await act(recipient, i, 'close', { outcome: 'referred_on' }); break
      case 4: await act(origin, i, 'withdraw'); break
      default: break // pending
    }
  }
  let notesOriginSees = 0
  for (let i = 0; i < sizes[world.size].notes; i++) {
    const writer = writers[i % writers.length] as SignedIn
    const visibility = i % 2 === 0 ? 'shared' : 'agency'
    ok(await writer.request({ method: 'POST', url: `${base}/notes`, payload: { body: `Canary note ${i}`, visibility } }), 201)
    if (writer === origin || visibility === 'shared') notesOriginSees++
  }
  return { referralId: referral.id, shareIds, notesOriginSees }
}

const worlds: Record<Size, World> = { small: await makeWorld('small'), large: await makeWorld('large') }
const bothSizes = ['small', 'large'] as const

/** Measures `route` once per size, each in a situation `setup` builds, then compares the counts. */
function routeTest (route: string, status: number, setup: (world: World) => Promise<{ who: SignedIn, options: InjectOptions }>,
  check?: (t: Test, size: Size, res: LightMyRequestResponse) => void) {
  t.test(route, async (t) => {
    for (const size of bothSizes) {
      const { who, options } = await setup(worlds[size])
      const res = await measureRoute(t, route, size, who, options, status)
      check?.(t, size, res)
    }
    sameCount(t, route)
  })
}

routeTest('POST /v1/referrals', 201, async (world) => ({
  who: world.origin,
  options: { method: 'POST', url: '/v1/referrals', payload: consentBody(world) }
}))

routeTest('POST /v1/referrals (Idempotency-Key, first)', 201, async (world) => ({
  who: world.origin,
  options: { method: 'POST', url: '/v1/referrals', headers: { 'idempotency-key': `first-${world.size}` }, payload: consentBody(world) }
}))

routeTest('POST /v1/referrals (Idempotency-Key, repeat)', 201, async (world) => {
  const options: InjectOptions = { method: 'POST', url: '/v1/referrals', headers: { 'idempotency-key': `repeat-${world.size}` }, payload: consentBody(world) }
  ok(await world.origin.request(options), 201)
  return { who: world.origin, options }
})

t.test('GET /v1/referrals', async (t) => {
  const lists = {} as Record<Size, { origin: SignedIn, recipient: SignedIn }>
  for (const size of bothSizes) {
    // A list world of its own, so the pages hold exactly `referrals` items.
    const origin = await signedIn(h, ['referrer', 'caseworker'])
    const recipient = await signedIn(h, ['caseworker'])
    const other = await signedIn(h, ['caseworker'])
    const bodies = [referralBodies.consent(), referralBodies.child(), referralBodies.anonymous()]
    for (let i = 0; i < sizes[size].referrals; i++) {
      const referral = ok(await origin.request({ method: 'POST', url: '/v1/referrals', payload: bodies[i % bodies.length] }), 201).json<Referral>()
      const share = ok(await origin.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: recipient.agencyId } }), 201).json<Share>()
      // Incoming referrals seen through pending, accepted and closed shares; other agencies' shares alongside.
      if (i % 3 >= 1) ok(await recipient.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares/${share.id}/accept` }), 200)
      if (i % 3 === 2) ok(await recipient.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares/${share.id}/close`, payload: { outcome: 'supported' } }), 200)
      if (i % 2 === 1) ok(await origin.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: other.agencyId } }), 201)
    }
    lists[size] = { origin, recipient }
  }
  const variants = [
    { route: 'GET /v1/referrals?direction=outgoing', who: 'origin', query: 'direction=outgoing&limit=50' },
    { route: 'GET /v1/referrals?direction=incoming', who: 'recipient', query: 'direction=incoming&limit=50' },
    { route: 'GET /v1/referrals (both directions)', who: 'origin', query: 'limit=50' }
  ] as const
  for (const { route, who, query } of variants) {
    for (const size of bothSizes) {
      const res = await measureRoute(t, route, size, lists[size][who], { method: 'GET', url: `/v1/referrals?${query}` }, 200)
      const page = res.json<{ items: ReferralListItem[], nextCursor: string | null }>()
      t.equal(page.items.length, sizes[size].referrals, `${route} ${size}: the page holds all ${sizes[size].referrals} referrals`)
      t.equal(page.nextCursor, null, `${route} ${size}: one page`)
    }
    sameCount(t, route)
  }
})

t.test('reads of one referral', async (t) => {
  const cases = { small: await makeCase(worlds.small, 'accepted'), large: await makeCase(worlds.large, 'accepted') }
  const variants = [
    { route: 'GET /v1/referrals/:id (origin view)', path: '', who: (w: World) => w.origin },
    { route: 'GET /v1/referrals/:id (recipient view, scoped)', path: '', who: (w: World) => w.recipients[0] as SignedIn },
    { route: 'GET /v1/referrals/:id/timeline (origin)', path: '/timeline', who: (w: World) => w.origin },
    { route: 'GET /v1/referrals/:id/timeline (recipient, scoped)', path: '/timeline', who: (w: World) => w.recipients[0] as SignedIn }
  ]
  for (const { route, path, who } of variants) {
    for (const size of bothSizes) {
      const res = await measureRoute(t, route, size, who(worlds[size]), { method: 'GET', url: `/v1/referrals/${cases[size].referralId}${path}` }, 200)
      if (route === 'GET /v1/referrals/:id (origin view)') {
        t.equal(res.json<Referral>().shares.length, sizes[size].shares, `${size}: the origin sees all ${sizes[size].shares} shares`)
      }
      if (route === 'GET /v1/referrals/:id/timeline (origin)') {
        const notes = res.json<{ items: TimelineEntry[] }>().items.filter((item) => item.type === 'note.created')
        t.equal(notes.length, cases[size].notesOriginSees, `${size}: the origin's timeline holds the ${cases[size].notesOriginSees} notes it may read`)
      }
    }
    sameCount(t, route)
  }
})

t.test('reads by a recipient with a pending share (triage)', async (t) => {
  const cases = { small: await makeCase(worlds.small, 'pending'), large: await makeCase(worlds.large, 'pending') }
  for (const [route, path] of [['GET /v1/referrals/:id (recipient view, triage)', ''], ['GET /v1/referrals/:id/timeline (recipient, triage)', '/timeline']] as const) {
    for (const size of bothSizes) {
      await measureRoute(t, route, size, worlds[size].recipients[0] as SignedIn, { method: 'GET', url: `/v1/referrals/${cases[size].referralId}${path}` }, 200)
    }
    sameCount(t, route)
  }
})

routeTest('PATCH /v1/referrals/:id', 200, async (world) => {
  const { referralId } = await makeCase(world, 'accepted')
  const etag = ok(await world.origin.request({ method: 'GET', url: `/v1/referrals/${referralId}` }), 200).headers.etag
  if (typeof etag !== 'string') throw new Error('setup: no ETag')
  return { who: world.origin, options: { method: 'PATCH', url: `/v1/referrals/${referralId}`, headers: { 'if-match': etag }, payload: { urgency: 'standard', exploitation: { area: 'Canary Harbour' } } } }
})

routeTest('POST /v1/referrals/:id/close', 200, async (world) => {
  const { referralId } = await makeCase(world, 'accepted')
  return { who: world.origin, options: { method: 'POST', url: `/v1/referrals/${referralId}/close`, payload: { outcome: 'supported', note: 'Canary closing note' } } }
}, (t, size, res) => {
  // Large: shares 0, 1 and 6 accepted and 5 pending are withdrawn by the close; 4 was withdrawn before.
  const withdrawn = res.json<Referral>().shares.filter((share) => share.status === 'withdrawn').length
  t.equal(withdrawn, size === 'small' ? 1 : 5, `${size}: closing withdraws every open share`)
})

routeTest('POST /v1/referrals/:id/shares', 201, async (world) => {
  const { referralId } = await makeCase(world, 'accepted')
  return { who: world.origin, options: { method: 'POST', url: `/v1/referrals/${referralId}/shares`, payload: { agencyId: world.spare.agencyId, scopes: ['circumstances'] } } }
})

routeTest('POST /v1/referrals/:id/shares/:shareId/accept', 200, async (world) => {
  const { referralId, shareIds } = await makeCase(world, 'pending')
  return { who: world.recipients[0] as SignedIn, options: { method: 'POST', url: `/v1/referrals/${referralId}/shares/${shareIds[0]}/accept` } }
})

routeTest('POST /v1/referrals/:id/shares/:shareId/decline', 200, async (world) => {
  const { referralId, shareIds } = await makeCase(world, 'pending')
  return { who: world.recipients[0] as SignedIn, options: { method: 'POST', url: `/v1/referrals/${referralId}/shares/${shareIds[0]}/decline`, payload: { reason: 'Canary: out of area' } } }
})

routeTest('POST /v1/referrals/:id/shares/:shareId/withdraw', 200, async (world) => {
  const { referralId, shareIds } = await makeCase(world, 'accepted')
  return { who: world.origin, options: { method: 'POST', url: `/v1/referrals/${referralId}/shares/${shareIds[0]}/withdraw`, payload: { reason: 'Canary withdrawal reason' } } }
})

routeTest('POST /v1/referrals/:id/shares/:shareId/close', 200, async (world) => {
  const { referralId, shareIds } = await makeCase(world, 'accepted')
  return { who: world.recipients[0] as SignedIn, options: { method: 'POST', url: `/v1/referrals/${referralId}/shares/${shareIds[0]}/close`, payload: { outcome: 'supported', note: 'Canary outcome note' } } }
})

routeTest('POST /v1/referrals/:id/notes (origin)', 201, async (world) => {
  const { referralId } = await makeCase(world, 'accepted')
  return { who: world.origin, options: { method: 'POST', url: `/v1/referrals/${referralId}/notes`, payload: { body: 'Canary origin note', visibility: 'shared' } } }
})

routeTest('POST /v1/referrals/:id/notes (accepted recipient)', 201, async (world) => {
  const { referralId } = await makeCase(world, 'accepted')
  return { who: world.recipients[0] as SignedIn, options: { method: 'POST', url: `/v1/referrals/${referralId}/notes`, payload: { body: 'Canary recipient note', visibility: 'agency' } } }
})

t.test('statement counts per route', async (t) => {
  const line = (statement: string) => statement.replace(/\s+/g, ' ').trim().slice(0, 80)
  const width = Math.max(...[...results.keys()].map((route) => route.length))
  const { small: s, large: l } = sizes
  const out = [
    `statement counts per route (small: ${s.shares} share, ${s.notes} note, ${s.referrals} referrals listed; large: ${l.shares} shares to ${l.shares} agencies, ${l.notes} notes, ${l.referrals} referrals listed)`,
    `${'route'.padEnd(width)}  small  large`
  ]
  for (const [route, { small, large }] of results) {
    const grows = (large?.statements.length ?? 0) !== (small?.statements.length ?? 0) ? '  GROWS' : ''
    out.push(`${route.padEnd(width)}  ${String(small?.statements.length ?? '-').padStart(5)}  ${String(large?.statements.length ?? '-').padStart(5)}${grows}`)
  }
  out.push('', 'statements per route (first 80 characters each)')
  for (const [route, { small, large }] of results) {
    const smallLines = (small?.statements ?? []).map(line)
    const largeLines = (large?.statements ?? []).map(line)
    const same = smallLines.join('\n') === largeLines.join('\n')
    const lists = same ? [['', smallLines]] as const : [[' (small)', smallLines], [' (large)', largeLines]] as const
    for (const [label, lines] of lists) {
      out.push(`${route}${label}: ${lines.length}`)
      lines.forEach((text, i) => { out.push(`  ${String(i + 1).padStart(2)}. ${text}`) })
    }
  }
  t.comment(out.join('\n'))
  t.ok(results.size > 0, 'counts collected')
})
